"""The SIP front: a real Kamailio between real peers, all on 127.0.0.1.

sipp processes stand in for call workers and for the gateway; baresip is a collector's
softphone. Linux routes all of 127.0.0.0/8 to lo, so "another machine" is another loopback
address: the trunk is 127.0.0.2, strangers call from 127.0.0.3.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import time
import uuid
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from accounts.db import create_schema, make_engine, make_sessions
from tests.integration.conftest import free_port, require_sipp
from voice.config import Config, from_mapping
from voice.routing import kamailio as kam
from voice.routing import kamailio_config
from voice.routing.kamailio import Kamailio
from voice.routing.kamailio_config import WorkerAddress
from voice.routing.softphones import Softphones

SIPP_DIR = Path(__file__).resolve().parents[1] / "sipp"
TRUNK_IP = "127.0.0.2"
STRANGER_IP = "127.0.0.3"
EXTERNAL = "+12125550199"  # a phone number somebody would love to call on our bill
FAIL_OVER_MS = 1000

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("CI") and shutil.which("kamailio", path="/usr/sbin:/usr/bin") is None,
        reason="Kamailio is not installed (`make test` installs the Debian package)",
    ),
]


# -- peers ---------------------------------------------------------------------------------


@dataclass
class Peer:
    """A background process (sipp UAS, baresip) with its log; killed by the fixture."""

    proc: asyncio.subprocess.Process
    log: Path
    port: int

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def received(self, method: str) -> list[str]:
        """Requests of `method` this peer received (sipp -trace_msg log)."""
        return [m for m in received_messages(self.text()) if m.startswith(f"{method} ")]


def trace_messages(trace: str) -> list[tuple[float, str, str]]:
    """(unix time, "sent" | "received", message) for each entry of a sipp -trace_msg log."""
    entries = []
    for block in trace.split("-" * 47)[1:]:
        head, _, message = block.partition("\n\n")
        stamp, _, what = head.strip().partition("\n")
        if "message received" in what or "message sent" in what:
            when = dt.datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            entries.append((when, "received" if "received" in what else "sent", message))
    return entries


def received_messages(trace: str) -> list[str]:
    """The SIP messages a sipp -trace_msg log shows as received, in order."""
    return [message for _, way, message in trace_messages(trace) if way == "received"]


def invite_answers(trace: str) -> list[str]:
    """The 2xx answers to INVITE a sipp -trace_msg log received (retransmissions included)."""
    return [
        m for m in received_messages(trace)
        if m.startswith("SIP/2.0 2") and re.search(r"(?im)^CSeq:\s*\d+\s+INVITE", m)
    ]  # fmt: skip


def call_ids(messages: list[str]) -> set[str]:
    """Distinct Call-IDs among `messages` (a UDP retransmission is the same call)."""
    return {m.group(1) for m in (re.search(r"(?im)^Call-ID:\s*(\S+)", x) for x in messages) if m}


def answer_seconds(trace: str) -> float:
    """From the caller's first INVITE to the 200 OK that answered it."""
    entries = trace_messages(trace)
    sent = next(t for t, way, m in entries if way == "sent" and m.startswith("INVITE "))
    answered = next(t for t, way, m in entries if way == "received" and m.startswith("SIP/2.0 200"))
    return answered - sent


@dataclass
class Lab:
    tmp: Path
    peers: list[Peer] = field(default_factory=list)
    fronts: list[Kamailio] = field(default_factory=list)

    async def front(
        self,
        workers: list[WorkerAddress],
        *,
        gateway: str = "",
        sip: dict[str, object] | None = None,
        **kamailio: object,
    ) -> Kamailio:
        port = free_port()
        raw = {
            "sip": {"bind": "127.0.0.1", "port": port, "tcp": False, **(sip or {})},
            "database": {"url": f"sqlite:///{self.tmp / 'voice.db'}"},
            "kamailio": {
                "trunks": [TRUNK_IP],
                "gateway": gateway,
                "fail_over_ms": FAIL_OVER_MS,
                **kamailio,
            },
        }
        front = Kamailio(from_mapping(raw), workers, self.tmp / f"kam-{port}")
        self.fronts.append(front)
        await front.start()
        return front

    async def sipp_uas(
        self, port: int, scenario: str = "kam_uas.xml", ip: str = "127.0.0.1", pause_ms: int = 0
    ) -> Peer:
        """A fake worker or gateway: answers INVITEs (200, or per scenario), OPTIONS with 200.

        `pause_ms` is the length of the scenario's `<pause/>` (sipp -d)."""
        log = self.tmp / f"uas-{port}.log"
        which = ["-sf", scenario] + (["-d", str(pause_ms)] if pause_ms else [])
        peer = await self._spawn(
            [require_sipp(), *which, "-i", ip, "-p", str(port), "-aa", "-mp", str(free_port())]
            + ["-nostdin", "-trace_msg", "-message_file", str(log)],
            log,
            port,
            stdout=self.tmp / f"uas-{port}.out",
        )
        await wait_until(lambda: udp_bound(ip, port), 5.0, f"sipp UAS on {ip}:{port}")
        return peer

    async def _spawn(
        self, args: list[str], log: Path, port: int, *, stdout: Path, cwd: Path = SIPP_DIR
    ) -> Peer:
        with stdout.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *args,
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        peer = Peer(proc, log, port)
        self.peers.append(peer)
        return peer

    async def close(self) -> None:
        for peer in self.peers:
            await kill(peer.proc)
        for front in self.fronts:
            await front.stop()


async def kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)


@dataclass
class UacResult:
    code: int | None
    seconds: float  # the whole sipp run, process start included
    output: str
    statuses: list[str]
    trace: str

    @property
    def answered_in(self) -> float:
        return answer_seconds(self.trace)


async def sipp_uac(
    front: Kamailio,
    tmp: Path,
    *,
    service: str,
    scenario: str = "kam_uac.xml",
    ip: str = "127.0.0.1",
    port: int | None = None,
    from_user: str = "caller",
    auth: tuple[str, str] = ("nobody", "nothing"),
    timeout: float = 8.0,
) -> UacResult:
    """One call from ip:port through Kamailio to sip:service@front; sipp's verdict and time."""
    port = port or free_port()
    log = tmp / f"uac-{port}-{time.monotonic_ns()}.log"
    args = [require_sipp(), "-sf", scenario, "-s", service, "-key", "from", from_user]
    args += ["-au", auth[0], "-ap", auth[1], "-i", ip, "-p", str(port), "-mp", str(free_port())]
    args += ["-m", "1", "-aa", "-nostdin", "-timeout", f"{int(timeout)}s", "-timeout_error"]
    args += ["-recv_timeout", "6000", "-trace_msg", "-message_file", str(log)]
    args.append(f"127.0.0.1:{front.cfg.sip.port}")
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=SIPP_DIR,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout + 5)
    except TimeoutError:
        await kill(proc)
        out = b"(killed: no exit)"
    text = log.read_text(errors="replace") if log.exists() else ""
    statuses = [m.split("\n", 1)[0] for m in received_messages(text) if m.startswith("SIP/2.0 ")]
    output = out.decode()[-2000:]
    return UacResult(proc.returncode, time.monotonic() - started, output, statuses, text)


def udp_bound(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, port))
        except OSError:
            return True
    return False


async def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def worker(name: str) -> WorkerAddress:
    return WorkerAddress(name, "127.0.0.1", free_port())


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[Lab]:
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        await lab.close()


def explain(front: Kamailio, *peers: Peer) -> str:
    logs = "\n".join(f"--- {p.log.name}\n{p.text()[-1500:]}" for p in peers)
    return f"--- kamailio.log\n{front.log_tail()}\n{logs}"


# -- process -------------------------------------------------------------------------------


def processes_running(config_path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(config_path).encode() in cmdline:
            found.append(int(entry.name))
    return found


async def test_start_answers_options_and_stop_leaves_no_process(lab: Lab) -> None:
    front = await lab.front([worker("w0")])
    assert front.alive and front.pid is not None
    assert kam.sip_options("127.0.0.1", front.cfg.sip.port) == "SIP/2.0 200 OK"
    children = processes_running(front.config_path)
    assert front.pid in children and len(children) > 1  # main + SIP/timer/RPC children
    assert "listen" not in front.log_path.read_text()  # the log exists and is Kamailio's
    await front.stop()
    assert not front.alive
    assert processes_running(front.config_path) == []


async def test_a_killed_kamailio_leaves_no_child_and_starts_again(lab: Lab) -> None:
    w0 = worker("w0")
    front = await lab.front([w0])
    os.kill(front.pid or 0, signal.SIGKILL)  # main process only: its children live on
    await wait_until(lambda: not front.alive, 5.0, "Kamailio seen dead")
    assert processes_running(front.config_path)  # orphans still holding the SIP port
    await front.stop()
    assert processes_running(front.config_path) == []
    await front.start()  # same port, same run folder
    assert kam.sip_options("127.0.0.1", front.cfg.sip.port) == "SIP/2.0 200 OK"
    # A supervisor that was itself killed: a new Kamailio object finds the old children by
    # the pid file and ends them before binding the port.
    os.kill(front.pid or 0, signal.SIGKILL)
    again = Kamailio(front.cfg, [w0], front.run_dir)
    lab.fronts.append(again)
    await again.start()
    # Everything running our config belongs to the new process group: no orphan survived.
    assert set(processes_running(front.config_path)) == set(again._leftovers(again.pid or 0))


async def test_start_failures_are_clear_errors_and_leave_nothing_running(lab: Lab) -> None:
    port = free_port()
    raw = {"sip": {"bind": "127.0.0.1", "port": port, "tcp": False}}
    missing = Kamailio(
        from_mapping({**raw, "kamailio": {"binary": "no-such-kamailio"}}), [worker("w0")], lab.tmp
    )
    with pytest.raises(kam.KamailioError, match="not found"):
        await missing.start()
    busy = Kamailio(from_mapping(raw), [worker("w0")], lab.tmp / "busy")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", port))  # someone else has the SIP port
        with pytest.raises(kam.KamailioError, match="exited"):
            await busy.start()
    assert not busy.alive
    assert processes_running(busy.config_path) == []


def tcp_options(port: int) -> str:
    """One OPTIONS over TCP; the status line of the reply."""
    call_id = uuid.uuid4().hex
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        local = s.getsockname()[1]
        s.sendall(
            (
                f"OPTIONS sip:127.0.0.1:{port};transport=tcp SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP 127.0.0.1:{local};branch=z9hG4bK{call_id}\r\n"
                f"From: <sip:probe@127.0.0.1>;tag={call_id[:8]}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
                f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )
        return s.recv(65535).decode().split("\r\n", 1)[0]


async def test_default_listen_every_interface_udp_and_tcp(lab: Lab) -> None:
    # config.toml's default: sip.bind 0.0.0.0 with UDP and TCP.
    w0 = worker("w0")
    uas = await lab.sipp_uas(w0.port)
    front = await lab.front([w0], sip={"bind": "0.0.0.0", "tcp": True})
    assert tcp_options(front.cfg.sip.port) == "SIP/2.0 200 OK"
    result = await sipp_uac(front, lab.tmp, service="ivr", ip=TRUNK_IP)
    assert result.code == 0, result.output + explain(front, uas)
    (invite,) = uas.received("INVITE")
    # Never 0.0.0.0 in Via or Record-Route: the worker's BYE must find its way back.
    assert "0.0.0.0" not in invite
    assert f"Record-Route: <sip:127.0.0.1:{front.cfg.sip.port};lr" in invite
    assert uas.received("BYE")


# -- trunk calls and fail-over ----------------------------------------------------------------


async def test_trunk_call_fails_over_from_a_503_worker_to_the_next(lab: Lab) -> None:
    busy, ok = worker("w0"), worker("w1")
    busy_uas = await lab.sipp_uas(busy.port, "kam_uas_503.xml")
    ok_uas = await lab.sipp_uas(ok.port)
    front = await lab.front([busy, ok])
    # Round-robin: of two calls, one starts at each worker, so one meets the 503 first.
    for _ in range(2):
        result = await sipp_uac(front, lab.tmp, service="ivr", ip=TRUNK_IP)
        assert result.code == 0, result.output + explain(front, busy_uas, ok_uas)
    assert len(busy_uas.received("INVITE")) == 1
    invites = ok_uas.received("INVITE")
    assert len(invites) == 2
    for invite in invites:
        # Forged X-Voice-* headers from the caller are gone; Kamailio's own is there.
        assert "X-Voice-Source: trunk" in invite
        assert "mallory" not in invite and "X-Voice-Softphone" not in invite
        assert "X-Voice-Source: softphone" not in invite
    assert front.worker_states()["w0"][0] == "A"  # busy is not dead: still active


async def test_a_worker_that_said_trying_is_waited_for_not_failed_over(lab: Lab) -> None:
    # A loaded worker: 100 Trying at once, 200 only after twice fail_over_ms. Its 100 says the
    # call is being set up there; another worker must never get the same INVITE.
    w0, w1 = worker("w0"), worker("w1")
    slow = [await lab.sipp_uas(w.port, "kam_uas_slow.xml", pause_ms=2 * FAIL_OVER_MS)
            for w in (w0, w1)]  # fmt: skip
    front = await lab.front([w0, w1])
    for _ in range(2):
        result = await sipp_uac(front, lab.tmp, service="ivr", ip=TRUNK_IP)
        assert result.code == 0, result.output + explain(front, *slow)
        assert result.answered_in >= 2 * FAIL_OVER_MS / 1000 - 0.1, result.answered_in
        assert len(invite_answers(result.trace)) == 1, result.statuses
    # Round-robin, no fail-over: one call each (Kamailio's UDP retransmissions aside).
    assert [len(call_ids(p.received("INVITE"))) for p in slow] == [1, 1]
    assert "did not answer in time" not in front.log_tail()


async def test_a_worker_answering_500_is_not_retried_elsewhere(lab: Lab) -> None:
    # 500: the worker failed on this call after it may have started it; trying the next worker
    # could place it twice. Only 486 and 503 (refused before anything started) fail over.
    broken, ok = worker("w0"), worker("w1")
    broken_uas = await lab.sipp_uas(broken.port, "kam_uas_500.xml")
    ok_uas = await lab.sipp_uas(ok.port)
    front = await lab.front([broken, ok])
    results = [await sipp_uac(front, lab.tmp, service="ivr", ip=TRUNK_IP) for _ in range(2)]
    # Round-robin: one call met the broken worker and its caller got the 500.
    assert sorted(r.code == 0 for r in results) == [False, True], [r.statuses for r in results]
    [failed] = [r for r in results if r.code != 0]
    assert failed.statuses[-1].startswith("SIP/2.0 500"), failed.statuses
    assert len(call_ids(broken_uas.received("INVITE"))) == 1
    assert len(call_ids(ok_uas.received("INVITE"))) == 1


async def test_a_killed_worker_is_skipped_within_fail_over_ms(lab: Lab) -> None:
    dead, ok = worker("w0"), worker("w1")
    dead_uas = await lab.sipp_uas(dead.port)
    ok_uas = await lab.sipp_uas(ok.port)
    front = await lab.front([dead, ok])
    await kill(dead_uas.proc)  # SIGKILL: the port is closed, INVITEs vanish unanswered
    answered = []
    for _ in range(2):
        result = await sipp_uac(front, lab.tmp, service="ivr", ip=TRUNK_IP)
        assert result.code == 0, result.output + explain(front, ok_uas)
        answered.append(result.answered_in)
    # Round-robin sent one call to the dead worker first: it waited fail_over_ms (not sipp's
    # 32 s INVITE timeout) and was answered by the live one; the other went straight there.
    slow, fast = max(answered), min(answered)
    # (tm's timer ticks make it fire up to ~1/16 s early: measured 0.98 s for 1000 ms.)
    assert FAIL_OVER_MS / 1000 - 0.1 <= slow < FAIL_OVER_MS / 1000 + 0.5, answered
    assert fast < 0.5, answered
    assert "did not answer in time" in front.log_tail()
    assert front.worker_states()["w0"].startswith("I")  # inactive (+ probing)
    # Later calls skip it: no waiting at all.
    for _ in range(2):
        result = await sipp_uac(front, lab.tmp, service="ivr", ip=TRUNK_IP)
        assert result.code == 0 and result.answered_in < 0.5, result


async def test_a_dead_worker_comes_back_when_its_probe_answers(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kamailio_config, "PROBE_INTERVAL_S", 1)
    w0, w1 = worker("w0"), worker("w1")
    await lab.sipp_uas(w1.port)
    front = await lab.front([w0, w1])  # nothing listens on w0 yet
    for _ in range(2):  # one of them meets the silent w0 first and marks it inactive
        assert (await sipp_uac(front, lab.tmp, service="ivr", ip=TRUNK_IP)).code == 0
    assert front.worker_states()["w0"].startswith("I")
    back = await lab.sipp_uas(w0.port)
    # The next OPTIONS probe (every PROBE_INTERVAL_S) finds it answering again.
    await wait_until(lambda: front.worker_states()["w0"].startswith("A"), 3.0, "w0 active")
    for _ in range(2):
        assert (await sipp_uac(front, lab.tmp, service="ivr", ip=TRUNK_IP)).code == 0
    assert len(back.received("INVITE")) == 1


async def test_no_worker_answering_gives_the_caller_an_error_not_silence(lab: Lab) -> None:
    front = await lab.front([worker("w0")])
    started = time.monotonic()
    result = await sipp_uac(front, lab.tmp, service="ivr", ip=TRUNK_IP, timeout=5)
    assert result.code != 0
    assert result.statuses and result.statuses[-1].startswith(("SIP/2.0 408", "SIP/2.0 503"))
    assert time.monotonic() - started < FAIL_OVER_MS / 1000 + 2.5


# -- toll fraud ------------------------------------------------------------------------------


async def test_trunk_call_to_an_external_number_goes_to_a_worker_not_the_gateway(
    lab: Lab,
) -> None:
    w0, gw_port = worker("w0"), free_port()
    uas = await lab.sipp_uas(w0.port)
    gateway = await lab.sipp_uas(gw_port)
    front = await lab.front([w0], gateway=f"127.0.0.1:{gw_port}")
    result = await sipp_uac(front, lab.tmp, service=EXTERNAL, ip=TRUNK_IP)
    assert result.code == 0, result.output + explain(front, uas, gateway)
    assert len(uas.received("INVITE")) == 1
    assert gateway.received("INVITE") == []


async def test_stranger_calling_an_external_number_is_refused_and_gateway_hears_nothing(
    lab: Lab,
) -> None:
    w0, gw_port = worker("w0"), free_port()
    uas = await lab.sipp_uas(w0.port)
    gateway = await lab.sipp_uas(gw_port)
    front = await lab.front([w0], gateway=f"127.0.0.1:{gw_port}")
    # 407 challenge, then 403 for made-up credentials.
    result = await sipp_uac(
        front, lab.tmp, service=EXTERNAL, scenario="kam_uac_refused.xml", ip=STRANGER_IP
    )
    assert result.code == 0, result.output + explain(front, gateway)
    assert [s[:11] for s in result.statuses] == ["SIP/2.0 407", "SIP/2.0 403"]
    # The same host as the workers but another port is not a worker either.
    result = await sipp_uac(front, lab.tmp, service=EXTERNAL, scenario="kam_uac_refused.xml")
    assert result.code == 0, result.output + explain(front, gateway)
    await asyncio.sleep(0.3)
    assert gateway.received("INVITE") == []
    assert uas.received("INVITE") == []


def udp_request(port: int, text: str, source: str = STRANGER_IP) -> str | None:
    """Send one hand-made request from `source`; the status line of the reply, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(1.0)
        local = s.getsockname()[1]
        s.sendto(text.replace("LOCAL", f"{source}:{local}").encode(), ("127.0.0.1", port))
        try:
            return s.recv(65535).decode(errors="replace").split("\r\n", 1)[0]
        except TimeoutError:
            return None


async def test_forged_in_dialog_invite_cannot_reach_the_gateway(lab: Lab) -> None:
    w0, gw_port = worker("w0"), free_port()
    gateway = await lab.sipp_uas(gw_port)
    front = await lab.front([w0], gateway=f"127.0.0.1:{gw_port}")
    port = front.cfg.sip.port
    # A To-tag and a Route through Kamailio, as if a dialog existed, aimed at the gateway.
    forged = (
        f"INVITE sip:{EXTERNAL}@127.0.0.1:{gw_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP LOCAL;branch=z9hG4bK{uuid.uuid4().hex}\r\n"
        f"Route: <sip:127.0.0.1:{port};lr>\r\n"
        "From: <sip:mallory@127.0.0.3>;tag=f1\r\n"
        f"To: <sip:{EXTERNAL}@127.0.0.1>;tag=t1\r\n"
        f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\nContact: <sip:mallory@LOCAL>\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    assert udp_request(port, forged) == "SIP/2.0 403 Forbidden"
    # Malformed (CSeq method differs from the request's) gets an error reply, not silence.
    malformed = forged.replace("CSeq: 1 INVITE", "CSeq: 1 BYE").replace(";tag=t1", "")
    reply = udp_request(port, malformed)
    assert reply is not None and reply.startswith("SIP/2.0 400"), reply
    await asyncio.sleep(0.3)
    assert gateway.received("INVITE") == []
    assert front.alive


async def test_only_a_worker_reaches_the_gateway(lab: Lab) -> None:
    w0, gw_port = worker("w0"), free_port()
    gateway = await lab.sipp_uas(gw_port)
    front = await lab.front([w0], gateway=f"127.0.0.1:{gw_port}")
    # The UAC sends from the worker's own ip:port: that is what makes it a worker.
    result = await sipp_uac(front, lab.tmp, service=EXTERNAL, port=w0.port)
    assert result.code == 0, result.output + explain(front, gateway)
    (invite,) = gateway.received("INVITE")
    assert invite.startswith(f"INVITE sip:{EXTERNAL}@127.0.0.1:{gw_port} ")
    assert "X-Voice-" not in invite  # internal headers stay inside
    # Not a phone number, not a softphone: nowhere to go.
    result = await sipp_uac(front, lab.tmp, service="nobody", port=w0.port)
    assert result.statuses[-1].startswith("SIP/2.0 404"), result


async def test_without_a_gateway_worker_calls_to_numbers_get_404(lab: Lab) -> None:
    w0 = worker("w0")
    front = await lab.front([w0])
    result = await sipp_uac(front, lab.tmp, service=EXTERNAL, port=w0.port)
    assert result.statuses[-1].startswith("SIP/2.0 404"), result


# -- softphones ------------------------------------------------------------------------------


def add_softphone(cfg: Config, name: str, password: str) -> None:
    engine = make_engine(cfg.database_url)
    create_schema(engine)
    Softphones(make_sessions(engine)).add(name, cfg.kamailio.realm, password)
    engine.dispose()


def write_tone(path: Path, seconds: int) -> None:
    """8 kHz mono 16-bit WAV of a 440 Hz tone (ausine only runs at 48 kHz)."""
    rate = 8000
    period = [int(8000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(rate)]
    frames = struct.pack(f"<{rate}h", *period) * seconds
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)


def baresip_config(sip_port: int, source: Path, ctrl_port: int | None = None) -> str:
    """A headless baresip-core config: no sound card, the WAV `source` as microphone, SIP on
    127.0.0.1:`sip_port`. With `ctrl_port`, commands (dial, sndcode, ...) are taken as JSON
    netstrings over TCP there."""
    rtp = free_port()
    lines = [
        "poll_method epoll",
        f"sip_listen 127.0.0.1:{sip_port}",
        "net_interface 127.0.0.1",
        "audio_player aubridge,nil",
        f"audio_source aufile,{source}",
        "audio_alert aubridge,nil",
        "module_path /usr/lib/baresip/modules",
        "module g711.so",
        "module aufile.so",
        "module aubridge.so",
        "module_app account.so",
        f"rtp_ports {rtp}-{min(rtp + 40, 65535)}",  # baresip tries ports within
    ]
    if ctrl_port is not None:
        lines += [
            "module_app menu.so",  # provides the dial command
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{ctrl_port}",
        ]
    return "\n".join(lines) + "\n"


def write_baresip_profile(
    folder: Path, user: str, password: str, registrar_port: int, ctrl_port: int | None = None
) -> int:
    """A baresip profile in `folder` (see `baresip_config`): auto-answer, a tone as microphone,
    registered as `user` at 127.0.0.1:`registrar_port`. Returns its SIP port."""
    folder.mkdir()
    sip_port = free_port()
    tone = folder / "tone.wav"
    write_tone(tone, seconds=60)  # aufile hangs up when its file ends
    (folder / "config").write_text(baresip_config(sip_port, tone, ctrl_port))
    (folder / "accounts").write_text(
        f"<sip:{user}@127.0.0.1:{registrar_port}>;auth_pass={password};answermode=auto;regint=60\n"
    )
    return sip_port


class Baresip:
    """baresip-core headless: auto-answer, a tone file as microphone, no sound card."""

    def __init__(self, lab: Lab, user: str, password: str, registrar_port: int) -> None:
        self.lab, self.user, self.password = lab, user, password
        self.registrar_port = registrar_port
        self.folder = lab.tmp / f"baresip-{user}-{free_port()}"
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        self.peer: Peer | None = None

    async def start(self) -> Peer:
        sip_port = write_baresip_profile(
            self.folder, self.user, self.password, self.registrar_port, self.ctrl_port
        )
        out = self.folder / "out.log"
        self.peer = await self.lab._spawn(
            ["baresip", "-f", str(self.folder)], out, sip_port, stdout=out, cwd=self.folder
        )
        return self.peer

    def command(self, command: str, params: str) -> None:
        body = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=2) as s:
            s.sendall(b"%d:%s," % (len(body), body))


@pytest.fixture
def require_baresip() -> None:
    if shutil.which("baresip") is None:
        pytest.fail("baresip (Debian baresip-core) is not installed: run `make test`")


@pytest.mark.usefixtures("require_baresip")
async def test_softphone_registers_and_a_worker_call_reaches_it(lab: Lab) -> None:
    w0 = worker("w0")
    front = await lab.front([w0])
    add_softphone(front.cfg, "alice", "correct-horse-1")
    front.refresh_credentials()  # added after start: applies without a restart
    phone = Baresip(lab, "alice", "correct-horse-1", front.cfg.sip.port)
    peer = await phone.start()
    await wait_until(lambda: front.registered("alice"), 5.0, "alice registered")
    result = await sipp_uac(front, lab.tmp, service="alice", port=w0.port)
    assert result.code == 0, result.output + explain(front, peer)
    assert "SIP/2.0 200 Answering" in result.statuses  # baresip's answer, relayed
    assert "alice@127.0.0.1: Call established" in peer.text()


@pytest.mark.usefixtures("require_baresip")
async def test_softphone_with_a_wrong_password_is_not_registered(lab: Lab) -> None:
    w0 = worker("w0")
    front = await lab.front([w0])
    add_softphone(front.cfg, "alice", "correct-horse-1")
    front.refresh_credentials()
    peer = await Baresip(lab, "alice", "wrong-horse-22", front.cfg.sip.port).start()
    await wait_until(lambda: "403 Forbidden" in peer.text(), 5.0, "baresip told 403")
    assert front.registered("alice") == []
    result = await sipp_uac(front, lab.tmp, service="alice", port=w0.port)
    assert result.statuses[-1].startswith("SIP/2.0 404"), result


@pytest.mark.usefixtures("require_baresip")
async def test_softphone_call_goes_to_a_worker_named_by_kamailio(lab: Lab) -> None:
    w0 = worker("w0")
    uas = await lab.sipp_uas(w0.port)
    front = await lab.front([w0])
    add_softphone(front.cfg, "alice", "correct-horse-1")
    front.refresh_credentials()
    phone = Baresip(lab, "alice", "correct-horse-1", front.cfg.sip.port)
    peer = await phone.start()
    await wait_until(lambda: front.registered("alice"), 5.0, "alice registered")
    phone.command("dial", f"sip:{EXTERNAL}@127.0.0.1:{front.cfg.sip.port}")
    await wait_until(lambda: uas.received("INVITE"), 5.0, "the INVITE at the worker")
    (invite,) = uas.received("INVITE")
    assert invite.startswith(f"INVITE sip:{EXTERNAL}@127.0.0.1:{front.cfg.sip.port} ")
    assert "X-Voice-Softphone: alice" in invite, explain(front, peer, uas)
    assert "X-Voice-Source" not in invite


async def test_softphone_cannot_call_as_another_user(lab: Lab) -> None:
    w0 = worker("w0")
    uas = await lab.sipp_uas(w0.port)
    front = await lab.front([w0])
    add_softphone(front.cfg, "alice", "correct-horse-1")
    front.refresh_credentials()
    # Right password for alice, but From says bob: refused after authentication.
    result = await sipp_uac(
        front,
        lab.tmp,
        service=EXTERNAL,
        scenario="kam_uac_refused.xml",
        ip=STRANGER_IP,
        from_user="bob",
        auth=("alice", "correct-horse-1"),
    )
    assert result.code == 0, result.output + explain(front)
    assert uas.received("INVITE") == []


def register(port: int, user: str, password: str) -> list[int]:
    """REGISTER with digest auth from a fresh UDP socket; the status codes received."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        local = s.getsockname()[1]
        call_id, auth, codes = uuid.uuid4().hex, "", []
        for cseq in (1, 2):
            s.sendto(
                (
                    f"REGISTER sip:127.0.0.1:{port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                    f"From: <sip:{user}@127.0.0.1>;tag={call_id[:8]}\r\n"
                    f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
                    f"CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{local}>\r\n"
                    f"Expires: 60\r\n{auth}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                ("127.0.0.1", port),
            )
            reply = s.recv(65535).decode()
            codes.append(int(reply.split(" ", 2)[1]))
            if codes[-1] != 401:
                break
            realm = re.search(r'realm="([^"]*)"', reply).group(1)  # type: ignore[union-attr]
            nonce = re.search(r'nonce="([^"]*)"', reply).group(1)  # type: ignore[union-attr]
            uri = f"sip:127.0.0.1:{port}"
            ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
            ha2 = hashlib.md5(f"REGISTER:{uri}".encode()).hexdigest()
            response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
            auth = (
                f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", '
                f'uri="{uri}", response="{response}", algorithm=MD5\r\n'
            )
    return codes


async def test_credential_changes_apply_without_restart(lab: Lab) -> None:
    front = await lab.front([worker("w0")])
    port, realm = front.cfg.sip.port, front.cfg.kamailio.realm
    engine = make_engine(front.cfg.database_url)
    create_schema(engine)
    phones = Softphones(make_sessions(engine))
    assert register(port, "bob", "bob-password-1") == [401, 403]  # unknown user
    # Two changes within one second: db_text only compares whole-second mtimes.
    phones.add("bob", realm, "bob-password-1")
    front.refresh_credentials()
    assert register(port, "bob", "bob-password-1") == [401, 200]
    phones.add("carol", realm, "carol-password-1")
    front.refresh_credentials()
    assert register(port, "carol", "carol-password-1") == [401, 200]
    assert front.registered("bob")
    # A new password drops bob's registration at once; only the new password works.
    phones.set_password("bob", realm, "bob-password-2")
    front.refresh_credentials()
    assert front.registered("bob") == []
    assert register(port, "bob", "bob-password-1") == [401, 403]
    assert register(port, "bob", "bob-password-2") == [401, 200]
    # Removed: registration gone, REGISTER refused.
    phones.remove("carol")
    front.refresh_credentials()
    assert front.registered("carol") == []
    assert register(port, "carol", "carol-password-1") == [401, 403]
    assert front.registered("bob")  # untouched
    engine.dispose()
