"""What the fleet tests share (test_fleet.py, test_metrics_fleet.py and the others that run
`voice serve` with several workers): the fleet's settings, a fleet with a gateway behind its
trunk, the trunk's gateway itself (a sipp UAS), sipp calling in, `voice ctl`, and the calls a
test made."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from sqlalchemy import select

from accounts.models import Call
from tests.integration.conftest import (
    REPO,
    SIPP_DIR,
    Server,
    free_port,
    free_port_block,
    require_sipp,
    start_server,
    stop_server,
)

KNOWN = "+12125550101"  # demo account 10042


def fleet_env(workers: int, **extra: str) -> dict[str, str]:
    return {
        "VOICE_WORKERS_COUNT": str(workers),
        "VOICE_WORKERS_SIP_PORT": str(free_port_block(workers)),
        "VOICE_WORKERS_RESTART_DELAY": "0.5",
        **extra,
    }


@contextlib.contextmanager
def running_fleet(data_dir: Path, workers: int, **extra: str) -> Iterator[Server]:
    """`voice serve` with `workers` workers behind Kamailio, whose trunk's gateway is
    127.0.0.1:`server.gateway_port` (where a SippGateway answers the calls it places);
    stopped on the way out."""
    gateway_port = free_port()
    env = fleet_env(workers, VOICE_KAMAILIO_GATEWAY=f"127.0.0.1:{gateway_port}", **extra)
    server = start_server(data_dir, env)
    server.gateway_port = gateway_port  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        stop_server(server)


class SippGateway:
    """The trunk's gateway: a sipp UAS on 127.0.0.1:`port` that answers one call (the one the
    fleet places reaches it through Kamailio); killed on the way out if still running."""

    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SippGateway:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    require_sipp(),
                    "-sn",
                    "uas",
                    "-i",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-mp",
                    str(free_port_block(4)),
                    "-m",
                    "1",
                    "-timeout",
                    "40s",
                    "-timeout_error",
                    "-nostdin",
                ],  # fmt: skip
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        time.sleep(0.5)  # bound before anything is dialled
        return self

    def ended(self) -> None:
        """The one call was answered and ended cleanly (sipp's exit status 0)."""
        assert self.process is not None
        assert self.process.wait(20) == 0, self.log.read_text()[-2000:]

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def sipp_calls(
    server: Server,
    tmp_path: Path,
    *,
    calls: int,
    rate: int,
    hold_ms: int,
    timeout: float = 60.0,
    background: bool = False,
) -> subprocess.CompletedProcess[bytes] | subprocess.Popen[bytes]:
    """`calls` IVR calls from a sipp UAC (sipp/fleet_ivr_call.xml, caller KNOWN) at `rate` a
    second, each held `hold_ms`: waited for, or with `background` the running sipp."""
    args = [
        require_sipp(),
        "-sf",
        "fleet_ivr_call.xml",
        "-key",
        "caller",
        KNOWN,
        "-s",
        "ivr",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port()),
        "-mp",
        str(free_port_block(4)),
        "-m",
        str(calls),
        "-l",
        str(calls),
        "-r",
        str(rate),
        "-d",
        str(hold_ms),
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(tmp_path / "sipp-errors.log"),
        "-trace_stat",
        "-stf",
        str(tmp_path / "sipp-stat.csv"),
        f"127.0.0.1:{server.sip_port}",
    ]
    if background:
        with (tmp_path / "sipp.out").open("wb") as out:
            return subprocess.Popen(args, cwd=SIPP_DIR, stdout=out, stderr=subprocess.STDOUT)
    return subprocess.run(args, cwd=SIPP_DIR, capture_output=True, timeout=timeout + 30)


def voice_ctl(server: Server, *args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "voice", "--config", str(REPO / "config.toml"), "ctl", *args],
        env={**os.environ, "VOICE_DATA_DIR": str(server.data_dir)},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)


# Calls since a moment, not since an id: each worker takes ids from its own reserved
# block (accounts/idblocks.py), so a later call may have a lower id than an earlier one.
def calls_since(server: Server, mark: dt.datetime) -> list[Call]:
    with server.session() as session:
        stmt = select(Call).where(Call.started_at >= mark).order_by(Call.started_at, Call.id)
        return list(session.scalars(stmt))


def last_id(server: Server) -> dt.datetime:
    """A mark for `calls_since`: now."""
    return dt.datetime.now(dt.UTC)
