"""The traffic of bench/soak.py: sipp callers, Make a Call, the webhook receiver, the killer.

Every source runs in its own thread, bounded in count and in time, and only ever talks to
127.0.0.1. What they saw is kept on the objects for the report (bench/soak_check.py).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from accounts.webhook import DELIVERY_HEADER, EVENT_HEADER, check_signature
from bench.capacity import CALLER_SCENARIO, SippRun, fleet_pids, progress, run_caller
from tests.integration.conftest import Server, free_port
from tests.integration.test_agent_fleet import Gateway
from tests.integration.test_api import api

# start_fleet's trunk: customers' calls come from there, softphones from 127.0.0.1.
TRUNK_IP = "127.0.0.2"
# sipp's Call-IDs are [call number]-[pid]@[local ip]; its error log runs events together.
RESTART_WAIT_S = 30  # a killed worker is restarted after workers.restart_delay (0.5 s)
SIPP_CALL_ID = re.compile(rf"\d+-\d+@{re.escape(TRUNK_IP)}")


def transfer_scenario(folder: Path) -> Path:
    """The fleet IVR caller pressing 0 (agent) instead of 1: written from the original at run
    time, so the two scripts cannot drift apart."""
    text = CALLER_SCENARIO.read_text()
    assert text.count("dtmf_2833_1.pcap") == 1, "fleet_ivr_call.xml no longer presses 1 once"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fleet_transfer_call.xml"
    path.write_text(text.replace("dtmf_2833_1.pcap", "dtmf_2833_0.pcap").replace(
        "RFC 2833 key 1", "RFC 2833 key 0 (agent)"))  # fmt: skip
    return path


@dataclass
class SippSource:
    """One sipp caller for the whole soak: `rate` new calls/s for `seconds`, each held
    `hold_ms` after its key. `failed_ids`: the Call-IDs sipp's error log names."""

    kind: str
    workdir: Path
    port: int
    rate: float
    seconds: float
    hold_ms: int
    scenario: Path = CALLER_SCENARIO
    run: SippRun | None = None
    failed_ids: set[str] = field(default_factory=set)

    @property
    def calls(self) -> int:
        return max(1, int(self.rate * self.seconds))

    def __call__(self) -> None:
        budget = self.seconds + self.hold_ms / 1000 + 90
        self.run = run_caller(self.workdir, self.port, calls=self.calls, rate=self.rate,
                              hold_ms=self.hold_ms, time_limit=budget,
                              scenario=self.scenario, local_ip=TRUNK_IP)  # fmt: skip
        with contextlib.suppress(FileNotFoundError):
            text = (self.workdir / "errors.log").read_text(errors="replace")
            self.failed_ids = set(SIPP_CALL_ID.findall(text))


@dataclass
class MakeCall:
    """One Make a Call: what the API said, how the call ended, what the gateway reported."""

    call_id: int | None
    status: int
    outcome: str  # the call's last progress event (ended after bridged: "connected")
    gateway_error: str = ""


class MakeCalls:
    """Make a Call one after another: a collector's `POST /api/calls`, the customer's leg
    answered by the gateway UA, which hangs up after `talk_s`; until `deadline` (monotonic)."""

    def __init__(self, server: Server, workdir: Path, token: str, account: str,
                 deadline: float, talk_s: float = 4.0, gap_s: float = 3.0) -> None:  # fmt: skip
        self.server, self.workdir, self.token, self.account = server, workdir, token, account
        self.deadline, self.talk_s, self.gap_s = deadline, talk_s, gap_s
        self.calls: list[MakeCall] = []
        self.stop = threading.Event()

    def __call__(self) -> None:
        for n in range(10_000):  # bounded in count as well as by the deadline
            if self.stop.is_set() or time.monotonic() > self.deadline - 30:
                return
            try:
                self.calls.append(self.one(self.workdir / f"call-{n}"))
            except Exception as exc:  # noqa: BLE001 - a failed call is a result, not an end
                self.calls.append(MakeCall(None, 0, f"error: {exc!r}"[:120]))
            self.stop.wait(self.gap_s)

    def one(self, folder: Path) -> MakeCall:
        folder.mkdir(parents=True)
        steps = f"wait:{self.talk_s:g};hangup"
        gateway = Gateway(self.server, folder, steps, 40)
        try:
            placed = api(self.server, "POST", "/api/calls", self.token,
                         json={"account": self.account})  # fmt: skip
            if placed.status_code != 202:
                return MakeCall(None, placed.status_code, f"refused: {placed.text[:80]}")
            call_id = int(placed.json()["call_id"])
            reports = gateway.reports(40)
        finally:
            gateway.stop()
        outcome = self.wait_end(call_id)
        error = str(reports[0].get("error") or "") if reports else "gateway got no call"
        return MakeCall(call_id, 202, outcome, error)

    def wait_end(self, call_id: int, timeout: float = 30.0) -> str:
        kinds: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                answer = api(self.server, "GET", f"/api/calls/{call_id}", self.token).json()
                kinds = [e["kind"] for e in answer.get("events", [])]
                if answer.get("status") not in (None, "in_progress"):
                    break
            time.sleep(0.5)
        if kinds[-2:] == ["bridged", "ended"]:
            return "connected"
        return next((k for k in reversed(kinds) if k != "ended"), "no events")


@dataclass
class Kill:
    at: float  # time.time()
    worker: str
    pid: int
    calls: int  # what /healthz said the worker held
    restarted_s: float | None = None  # until /healthz showed a new, ready process; None: not seen


class Killer:
    """SIGKILL one worker every `every_s` (one that holds calls, when there is one)."""

    def __init__(self, server: Server, every_s: float, deadline: float) -> None:
        self.server, self.every_s, self.deadline = server, every_s, deadline
        self.kills: list[Kill] = []
        self.missed: list[str] = []  # why a due kill did not happen
        self.stop = threading.Event()

    def __call__(self) -> None:
        for _ in range(1000):
            if self.stop.wait(self.every_s) or time.monotonic() > self.deadline - 10:
                return
            try:
                self.kill_one()
            except Exception as exc:  # noqa: BLE001 - e.g. /healthz timed out: try next time
                self.missed.append(f"{exc!r}"[:100])
                progress(f"  no kill this time: {self.missed[-1]}")

    def kill_one(self) -> None:
        health: dict[str, Any] = self.server.health()  # type: ignore[assignment]
        up = [w for w in health["workers"] if w["pid"] and w["ready"]]
        busy = [w for w in up if w["calls"]] or up
        victim = random.choice(busy)
        os.kill(victim["pid"], signal.SIGKILL)
        kill = Kill(time.time(), victim["name"], victim["pid"], victim["calls"] or 0)
        self.kills.append(kill)
        started = time.monotonic()
        for _ in range(RESTART_WAIT_S):  # the supervisor notices and starts a new process
            if self.stop.wait(1.0):
                break
            with contextlib.suppress(Exception):
                now = {w["name"]: w for w in self.server.health()["workers"]}  # type: ignore[index]
                if now[kill.worker]["pid"] not in (None, kill.pid) and now[kill.worker]["ready"]:
                    kill.restarted_s = time.monotonic() - started
                    break
        back = f"{kill.restarted_s:.1f} s" if kill.restarted_s is not None else "not seen"
        progress(f"  killed {kill.worker} (pid {kill.pid}, {kill.calls} calls); back: {back}")


class Receiver:
    """The CRM: takes every webhook POST on 127.0.0.1 with 200, checks its signature and
    counts deliveries by id."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.got: Counter[int] = Counter()
        self.events: Counter[str] = Counter()
        self.bad_signatures = 0
        self.port = free_port()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.take(dict(self.headers), body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def take(self, headers: dict[str, str], body: bytes) -> None:
        ok = check_signature(self.secret, headers, body, time.time())
        lowered = {k.lower(): v for k, v in headers.items()}
        delivery = lowered.get(DELIVERY_HEADER.lower(), "")
        with self._lock:
            self.bad_signatures += not ok
            self.events[lowered.get(EVENT_HEADER.lower(), "?")] += 1
            if delivery.isdigit():
                self.got[int(delivery)] += 1
            else:
                self.events["no delivery id"] += 1

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def pids_now(server: Server) -> dict[str, int]:
    """Process name -> pid of the fleet now (workers, supervisor, zygote, Kamailio's main)."""
    pids = fleet_pids(server)
    if pids is None:
        return {}
    named = {**pids.workers, "supervisor": pids.supervisor}
    if pids.zygote:
        named["zygote"] = pids.zygote
    if pids.kamailio:
        named["kamailio"] = pids.kamailio
    return named
