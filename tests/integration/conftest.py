"""Integration fixtures: the server as a real process, real SIP peers, all on 127.0.0.1."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from accounts.call_journal import CallJournal
from accounts.db import make_engine, make_sessions
from accounts.services import Ledger
from voice.config import TtsConfig

REPO = Path(__file__).resolve().parents[2]
PJUA = REPO / "tests" / "peers" / "pjua.py"
SIPP_DIR = REPO / "tests" / "sipp"

pytestmark = pytest.mark.integration


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def free_port_block(count: int, low: int = 20000, high: int = 32000) -> int:
    """First of `count` consecutive UDP ports free on 127.0.0.1, below the ephemeral range."""
    for _ in range(200):
        base = random.randrange(low, high - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {count} free UDP ports")


def sip_options(port: int, timeout: float = 0.5) -> str | None:
    """Send one OPTIONS; return the status line of the reply, or None."""
    call_id = uuid.uuid4().hex
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
        msg = (
            f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{call_id[:12]}\r\n"
            f"From: <sip:probe@127.0.0.1:{local}>;tag={call_id[:8]}\r\n"
            f"To: <sip:ping@127.0.0.1:{port}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        s.settimeout(timeout)
        s.sendto(msg.encode(), ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(65535)
        except TimeoutError:
            return None
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    sip_port: int
    http_port: int
    data_dir: Path
    db_url: str
    log_path: Path

    def health(self) -> dict[str, object]:
        return httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=5).json()

    @functools.cached_property
    def engine(self) -> Engine:
        return make_engine(self.db_url)

    @functools.cached_property
    def _sessions(self) -> sessionmaker[Session]:
        return make_sessions(self.engine)

    def session(self) -> Session:
        return self._sessions()

    def journal(self) -> CallJournal:
        return CallJournal(make_sessions(make_engine(self.db_url)))

    def ledger(self) -> Ledger:
        return Ledger(make_sessions(make_engine(self.db_url)))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


# The voice the test servers speak with (VOICE_TTS_ENGINE below); a test's own ClipLibrary
# must use it too, to read the server's clip cache instead of rendering another voice.
TEST_TTS = TtsConfig(engine="espeak-ng")


def start_server(
    data_dir: Path,
    extra_env: dict[str, str] | None = None,
    serve_args: tuple[str, ...] = (),
    drop_env: tuple[str, ...] = (),
    ready_timeout: float = 60.0,
) -> Server:
    """`voice serve` as a process on free ports; `serve_args` go on its command line and
    `drop_env` names VOICE_* defaults of the tests not to set (a flag then decides)."""
    sip_port, http_port = free_port(), free_port(socket.SOCK_STREAM)
    db_url = (extra_env or {}).get("VOICE_DATABASE_URL", f"sqlite:///{data_dir / 'voice.db'}")
    env = {
        **os.environ,
        "VOICE_DATA_DIR": str(data_dir),
        "VOICE_SIP_BIND": "127.0.0.1",
        "VOICE_SIP_PORT": str(sip_port),
        "VOICE_SIP_RTP_PORT": str(40000 + (sip_port % 200) * 100),
        "VOICE_SIP_RTP_PORT_RANGE": "100",
        "VOICE_HTTP_PORT": str(http_port),
        "VOICE_DATABASE_URL": db_url,
        # Compliance notices are on by default and unskippable; the flow tests cover them, so
        # integration calls skip them to stay fast.
        "VOICE_IVR_RECORDING_NOTICE": "false",
        "VOICE_IVR_COLLECTOR_DISCLOSURE": "false",
        # The menu tests start at the menu; right-party verification has its own tests
        # (test_verify_call.py), which turn it back on.
        "VOICE_IVR_VERIFY": "none",
        # espeak-ng renders the prompt set in ~3 s, piper (the default voice) in ~45 s on this
        # machine: every server here starts on a fresh cache. test_piper_voice.py runs piper.
        "VOICE_TTS_ENGINE": TEST_TTS.engine,
        "VOICE_WORKERS_COUNT": "1",  # developer mode unless a test asks for the fleet
        **(extra_env or {}),
    }
    for name in drop_env:
        env.pop(name, None)
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "voice",
            "--config",
            str(REPO / "config.toml"),
            "serve",
            *serve_args,
        ],  # fmt: skip
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        start_new_session=True,
    )
    log.close()  # the child holds its own descriptor
    server = Server(proc, sip_port, http_port, data_dir, db_url, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{server.log()[-3000:]}")
        if sip_options(sip_port) and _healthy(server):
            return server
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"server did not answer OPTIONS:\n{server.log()[-3000:]}")


def _healthy(server: Server) -> bool:
    """Every worker answers its control channel (Kamailio answers OPTIONS before they do)."""
    try:
        return server.health()["status"] == "ok"
    except (httpx.HTTPError, ValueError):
        return False


def stop_server(server: Server) -> None:
    if "engine" in server.__dict__:
        server.engine.dispose()  # the tests' own connections (PostgreSQL would warn at exit)
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("voice"))
    try:
        yield srv
    finally:
        stop_server(srv)


_ua_ports = iter(range(0, 10_000))


def ua_command(
    server: Server,
    steps: str,
    *,
    caller: str = "+12125550101",
    calls: int = 1,
    dtmf: str = "rfc2833",
    record: Path | None = None,
    timeout: float = 60.0,
    codec: str = "G722/16000",
    rtp_port: int | None = None,
) -> list[str]:
    """The command line of the scripted pjsua2 UA calling `server` (its own process)."""
    if rtp_port is None:
        rtp_port = 31000 + next(_ua_ports) * 20
    cmd = [
        sys.executable,
        str(PJUA),
        "--target",
        f"sip:ivr@127.0.0.1:{server.sip_port}",
        "--caller",
        caller,
        "--sip-port",
        str(free_port()),
        "--rtp-port",
        str(rtp_port),
        "--calls",
        str(calls),
        "--dtmf-method",
        dtmf,
        "--steps",
        steps,
        "--timeout",
        str(timeout),
        "--codec",
        codec,
    ]
    if record is not None:
        cmd += ["--record", str(record)]
    return cmd


def run_ua(server: Server, steps: str, **options: Any) -> list[dict[str, object]]:
    """Run the scripted pjsua2 UA to the end; one report per call (see `ua_command`)."""
    calls = options.get("calls", 1)
    timeout = options.get("timeout", 60.0)
    cmd = ua_command(server, steps, **options)
    out = subprocess.run(cmd, capture_output=True, timeout=timeout + 30, check=False)
    reports = [
        json.loads(line) for line in out.stdout.decode().splitlines() if line.startswith("{")
    ]
    assert len(reports) == calls, out.stderr.decode()[-3000:]
    return reports


def start_ua(
    server: Server, steps: str, log: Path, *, ahead: bool = False, **options: Any
) -> subprocess.Popen[bytes]:
    """Start the scripted UA in the background, its output to `log`; the caller ends it.

    `ahead`: the UA runs before the server on the CPU (nice -10, as root). A customer's phone
    is not on our machine: a test that loads both cores must not starve the UA's own media
    clock, or the audio is damaged before it reaches the server (bursts the jitter buffer drops).
    """

    def first() -> None:
        with contextlib.suppress(PermissionError):
            os.nice(-10)

    with log.open("wb") as out:
        return subprocess.Popen(
            ua_command(server, steps, **options), stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=first if ahead else None,
        )  # fmt: skip


def require_sipp() -> str:
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.fail("sipp (Debian sip-tester) is not installed: run `make test`")
    return sipp


def last_call_id(server: Server, caller: str) -> int:
    from sqlalchemy import select

    from accounts.models import Call

    with make_sessions(make_engine(server.db_url))() as session:
        call_id = session.scalars(
            select(Call.id)
            .where(Call.caller == caller)
            .order_by(Call.started_at.desc(), Call.id.desc())  # ids: per-worker blocks
            .limit(1)
        ).first()
    assert call_id is not None, f"no call from {caller}"
    return call_id


def events_of(server: Server, call_id: int) -> list[tuple[str, dict[str, Any]]]:
    """The call's events, in order: (kind, detail)."""
    from sqlalchemy import select

    from accounts.models import CallEvent

    with server.session() as session:
        rows = session.scalars(
            select(CallEvent).where(CallEvent.call_id == call_id).order_by(CallEvent.seq)
        )
        return [(e.kind, e.detail) for e in rows]


def write_wav(path: Path, pcm: Any, rate: int = 16000) -> Path:
    """16-bit mono WAV of `pcm` (int16 samples), e.g. for the scripted UA's `say:` step."""
    import numpy as np
    import soundfile

    soundfile.write(path, np.asarray(pcm, dtype=np.int16), rate, subtype="PCM_16")
    return path


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()  # type: ignore[operator]
        if value:
            return value
        time.sleep(interval)
    return predicate()  # type: ignore[operator]


def scrape(server: Server) -> dict[str, float]:
    """GET /metrics read by Prometheus' own text parser (which rejects a malformed page), as
    {'name': value, 'name{a="x",b="y"}': value} with labels sorted."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{server.http_port}/metrics", timeout=10).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out
