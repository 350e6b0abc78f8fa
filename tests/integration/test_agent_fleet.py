"""Collector-placed calls through the real fleet: Kamailio, two workers, a registered
softphone (baresip, collector Dana Whitfield) and the trunk's gateway played by the scripted
pjsua2 UA in answer mode (the customer's phone).

- click-to-call (worker op): the softphone rings first, then the customer is dialled through
  Kamailio's gateway with the configured caller ID, then both are bridged on two channels;
- a softphone dialling a number: refused by a guardrail with 403 + Reason (nothing reaches
  the gateway), or connected and recorded like click-to-call;
- a caller without valid credentials never reaches a worker or the gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from sqlalchemy import select

from accounts.models import Call
from recordings.paths import path_for
from tests.integration.conftest import (
    PJUA,
    REPO,
    SIPP_DIR,
    Server,
    events_of,
    free_port,
    require_sipp,
    start_server,
    stop_server,
    wait_for,
    write_wav,
)
from tests.integration.fleet import fleet_env
from tests.integration.test_agent_transfer import (
    COLLECTOR_SOUND,
    CUSTOMER_SOUND,
    RATE,
    Softphone,
    assert_own_party,
    closed,
    loud_pieces,
    require_baresip,
    scores,
    upsample,
)
from tests.integration.test_api import api, token_of, voice_users
from tests.integration.test_kamailio import received_messages

CALLER_ID = "+12125550100"
PASSWORD = "correct-horse-9"
pytestmark = pytest.mark.skipif(
    not Path("/usr/sbin/kamailio").exists() and not os.environ.get("CI"),
    reason="Kamailio is not installed (make test installs it)",
)


def start_fleet(data_dir: Path, **extra_env: str) -> Server:
    """The fleet these tests use (more VOICE_* settings in `extra_env`), with Dana's softphone
    login `alice`; the caller stops it (stop_server)."""
    gateway_port = free_port()
    extra = fleet_env(
        2,
        VOICE_KAMAILIO_GATEWAY=f"127.0.0.1:{gateway_port}",
        # The trunk is another loopback address: softphones call from 127.0.0.1.
        VOICE_KAMAILIO_TRUNKS="127.0.0.2",
        VOICE_GUARDRAILS_CALLER_ID=CALLER_ID,
        # Calling hours depend on the wall clock: off here. The destination rule always
        # applies: +12125550103 (account 30003) is not allowed.
        VOICE_GUARDRAILS_ENABLED="false",
        VOICE_GUARDRAILS_ALLOWED_DESTINATIONS="+12125550101,+12125550102",
        VOICE_AGENTS_RING_TIMEOUT="8",
        **extra_env,
    )
    srv = start_server(data_dir, extra)
    srv.gateway_port = gateway_port  # type: ignore[attr-defined]
    try:
        env = {**os.environ, "VOICE_DATA_DIR": str(srv.data_dir)}
        added = subprocess.run(
            [sys.executable, "-m", "voice", "--config", str(REPO / "config.toml")]
            + ["softphones", "add", "alice", "--collector", "Dana Whitfield", "--password-stdin"],
            input=f"{PASSWORD}\n".encode(),
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert added.returncode == 0, added.stderr.decode()
    except BaseException:
        stop_server(srv)
        raise
    return srv


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_baresip()
    srv = start_fleet(tmp_path_factory.mktemp("agent-fleet"))
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture
def alice(fleet: Server, tmp_path: Path) -> Iterator[Softphone]:
    phone = Softphone(tmp_path / "alice", "alice", registrar=(fleet.sip_port, PASSWORD))
    try:
        assert wait_for(lambda: "200 OK" in phone.text(), 10), phone.text()
        yield phone
    finally:
        phone.stop()


class Gateway:
    """The trunk's gateway: the scripted UA answering on the configured gateway port."""

    def __init__(self, server: Server, tmp: Path, steps: str, timeout: float) -> None:
        self.out = tmp / "gateway.json"
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(PJUA), "--answer", "--calls", "1"]
                + ["--sip-port", str(server.gateway_port), "--rtp-port", "34100"]  # type: ignore[attr-defined]
                + ["--steps", steps, "--timeout", str(timeout)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        time.sleep(1.0)  # its SIP port is bound

    def reports(self, timeout: float) -> list[dict[str, object]]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return [
            json.loads(line)
            for line in self.out.read_text(errors="replace").splitlines()
            if line.startswith("{")
        ]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def worker_sock(server: Server, name: str = "w0") -> Path:
    return server.data_dir / "run" / "workers" / f"{name}.sock"


def account_id(server: Server, number: str) -> int:
    from accounts.models import Account

    with server.session() as session:
        found = session.scalar(select(Account.id).where(Account.number == number))
    assert found is not None
    return found


def check_two_channels(server: Server, call_id: int) -> None:
    (rec,) = closed(server, call_id, 1)
    assert (rec.channels, rec.kind, rec.status) == (2, "call", "final"), rec
    audio, _ = soundfile.read(path_for(rec.path, server.data_dir / "recordings"), dtype="int16")
    left, right = loud_pieces(audio[:, 0], count=5), loud_pieces(audio[:, 1], count=5)
    collector = upsample(COLLECTOR_SOUND, 2)
    assert left and right, (len(left), len(right))
    assert_own_party(scores(left, CUSTOMER_SOUND), scores(left, collector))
    assert_own_party(scores(right, collector), scores(right, CUSTOMER_SOUND))


def check_customer_invite(report: dict[str, object]) -> None:
    invite = str(report["invite"])
    assert invite.startswith("INVITE sip:+12125550101@127.0.0.1"), invite[:200]
    assert f"sip:{CALLER_ID}@" in invite.split("From:", 1)[1].split("\r\n", 1)[0], invite
    assert f"P-Asserted-Identity: <sip:{CALLER_ID}@" in invite, invite
    assert "X-Voice-" not in invite


def test_make_a_call_rings_the_collector_then_bridges_the_customer(
    fleet: Server, alice: Softphone, tmp_path: Path
) -> None:
    """The whole chain: POST /api/calls -> supervisor -> a worker's click_to_call -> Kamailio
    -> softphone, then gateway; a PCI pause over the API silences both channels."""
    token = token_of(voice_users(fleet, "add", "dana", "--role", "collector",
                                 "--collector", "Dana Whitfield"))  # fmt: skip
    said = write_wav(tmp_path / "customer.wav", CUSTOMER_SOUND, RATE)
    gateway = Gateway(fleet, tmp_path, f"wait:1;say:{said};wait:9;hangup", 40)
    try:
        placed = api(fleet, "POST", "/api/calls", token, json={"account": "10042"})
        assert placed.status_code == 202, placed.text
        call_id = placed.json()["call_id"]
        assert isinstance(call_id, int) and placed.json()["status_url"] == f"/api/calls/{call_id}"

        def kinds() -> list[str]:
            status = api(fleet, "GET", f"/api/calls/{call_id}", token).json()
            return [e["kind"] for e in status["events"]]

        assert wait_for(lambda: "bridged" in kinds(), 20), kinds()
        time.sleep(2.0)  # the customer is talking (the WAV starts 1 s after the answer)
        paused = api(fleet, "POST", f"/api/calls/{call_id}/recording/pause", token)
        assert paused.status_code == 200, paused.text
        time.sleep(1.5)
        resumed = api(fleet, "POST", f"/api/calls/{call_id}/recording/resume", token)
        assert resumed.status_code == 200, resumed.text
        (report,) = gateway.reports(40)
    finally:
        gateway.stop()
    assert not report["error"], report
    check_customer_invite(report)
    with fleet.session() as session:
        call = session.get(Call, call_id)
        assert call is not None
        assert (call.direction, call.callee, call.caller) == ("outbound", "+12125550101", CALLER_ID)
        assert call.account_id == account_id(fleet, "10042") and call.answered_at is not None
    assert wait_for(lambda: kinds()[-1:] == ["ended"], 10), kinds()
    assert kinds() == [
        "click_to_call",
        "collector_ringing",
        "collector_answered",
        "dialling_customer",
        "customer_answered",
        "bridged",
        "ended",
    ]
    status = api(fleet, "GET", f"/api/calls/{call_id}", token).json()
    first = status["events"][0]
    assert (first["user"], first["collector"], first["via"]) == (
        "dana",
        "Dana Whitfield",
        "softphone alice",
    )
    check_two_channels(fleet, call_id)
    # The pause: marked on the recording, and nothing but zeros on either channel inside it.
    (rec,) = closed(fleet, call_id, 1)
    assert len(rec.pauses) == 1 and rec.pauses[0]["end"] - rec.pauses[0]["start"] > 1.2, rec
    audio, _ = soundfile.read(path_for(rec.path, fleet.data_dir / "recordings"), dtype="int16")
    start = int((rec.pauses[0]["start"] + 0.2) * RATE)
    end = int((rec.pauses[0]["end"] - 0.2) * RATE)
    assert not audio[start:end].any(), "sound recorded during the PCI pause"
    assert np.abs(audio[: start - RATE, 0]).max() > 1000  # the customer before it ...
    assert wait_for(lambda: note_of(fleet, call_id), 10)
    assert "Click-to-call to +12125550101 by Dana Whitfield" in note_of(fleet, call_id)


def note_of(server: Server, call_id: int) -> str:
    from accounts.models import Note

    with server.session() as session:
        return session.scalar(select(Note.body).where(Note.call_id == call_id)) or ""


def sipp_softphone_call(
    server: Server, tmp: Path, to: str, user: str, password: str
) -> tuple[int, list[str]]:
    """One INVITE from a softphone through Kamailio (sipp, digest auth); its exit and replies."""
    log = tmp / f"sipp-{time.monotonic_ns()}.log"
    args = [require_sipp(), "-sf", "softphone_refused.xml", "-s", to, "-key", "from", user]
    args += ["-au", user, "-ap", password, "-i", "127.0.0.1", "-p", str(free_port())]
    args += ["-mp", str(free_port()), "-m", "1", "-nostdin", "-timeout", "15s", "-timeout_error"]
    args += ["-trace_msg", "-message_file", str(log), f"127.0.0.1:{server.sip_port}"]
    out = subprocess.run(args, cwd=SIPP_DIR, capture_output=True, timeout=30, check=False)
    text = log.read_text(errors="replace") if log.exists() else ""
    replies = [m for m in received_messages(text) if m.startswith("SIP/2.0 ")]
    return out.returncode, replies


def test_softphone_call_refused_by_a_guardrail_gets_403_with_reason(
    fleet: Server, tmp_path: Path
) -> None:
    gateway = Gateway(fleet, tmp_path, "wait:1;hangup", 12)
    try:
        code, replies = sipp_softphone_call(fleet, tmp_path, "+12125550103", "alice", PASSWORD)
        # Wrong credentials: Kamailio refuses before any worker sees the call.
        bad_code, bad_replies = sipp_softphone_call(
            fleet, tmp_path, "+12125550101", "alice", "wrong-horse-1"
        )
        reports = gateway.reports(15)
    finally:
        gateway.stop()
    assert code == 0, replies
    final = replies[-1]
    assert final.startswith("SIP/2.0 403"), final
    assert 'Reason: SIP;cause=403;text="destination +12125550103 is not in ' in final, final
    assert bad_code == 0 and bad_replies[-1].startswith("SIP/2.0 403"), bad_replies
    assert "Reason: SIP;cause=403" not in bad_replies[-1]  # Kamailio's, not a worker's
    assert reports == [], reports  # nothing was dialled
    assert "softphone alice: call to '+12125550103' refused" in fleet.log()


def test_softphone_call_allowed_is_dialled_bridged_and_recorded(
    fleet: Server, alice: Softphone, tmp_path: Path
) -> None:
    said = write_wav(tmp_path / "customer.wav", CUSTOMER_SOUND, RATE)
    gateway = Gateway(fleet, tmp_path, f"wait:1;say:{said};wait:7;hangup", 40)
    try:
        alice.command("dial", f"sip:+12125550101@127.0.0.1:{fleet.sip_port}")
        (report,) = gateway.reports(40)
    finally:
        gateway.stop()
    assert not report["error"], report
    check_customer_invite(report)
    with fleet.session() as session:
        call = session.scalars(
            select(Call)
            .where(Call.direction == "outbound")
            .order_by(Call.started_at.desc(), Call.id.desc())
        ).first()
        assert call is not None and call.callee == "+12125550101"
        call_id = call.id
    kinds = [k for k, _ in events_of(fleet, call_id)]
    assert kinds == [
        "softphone_call",
        "dialling_customer",
        "customer_answered",
        "bridged",
        "ended",
    ], kinds
    check_two_channels(fleet, call_id)
    assert np.isfinite(call_id)
