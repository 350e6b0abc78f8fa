"""Agent transfer ordering, the voicemail state machine, whom to ring, and the pure helpers of
collector-placed calls, against fakes (no SIP)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from accounts.db import create_schema, make_engine, make_sessions
from accounts.models import Collector, Softphone
from accounts.reach import Agent, agents_for
from accounts.views import AccountSummary
from recordings.capture import WavWriter, read_growing_wav
from voice.calls.outbound import caller_id_headers, status_of
from voice.config import AgentsConfig
from voice.ivr.call import HangUp
from voice.ivr.transfer import (
    AgentTransfer,
    Connected,
    Ring,
    Voicemail,
    ring_outcome,
)
from voice.ivr.voicemail import record_message
from voice.sip.uri import header, reason_header, request_user, softphone_of

ACCOUNT = AccountSummary(1, "10042", "Northwind Traders", "USD", 7)
DANA = Agent(7, "Dana Whitfield", "sip:alice@realm", "softphone alice")
MARCUS = Agent(8, "Marcus Lee", "sip:marcus@example", "sip_uri")


class Journal:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def event(self, kind: str, detail: dict[str, Any]) -> None:
        self.events.append((kind, detail))

    async def identified(self, account: AccountSummary, how: str) -> None: ...
    async def finish(self, status: str, end_reason: str, summary: str) -> None: ...

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


class Line:
    """Scripted SIP side: each agent's ring outcome, what a voicemail returns."""

    def __init__(self, rings: dict[str, str], voicemail: Voicemail | None = None) -> None:
        self.rings = rings
        self.log: list[str] = []
        self._voicemail = voicemail

    async def hold(self, call: Any) -> None:
        self.log.append("hold")

    async def unhold(self, call: Any) -> None:
        self.log.append("unhold")

    async def ring(self, agent: Agent, timeout: float) -> Ring:
        self.log.append(f"ring {agent.name} {timeout:g}")
        outcome = self.rings[agent.name]
        code = {"busy": 486, "failed": 404}.get(outcome)
        return Ring(outcome, code, "leg" if outcome == "answered" else None)

    async def connect(self, call: Any, agent: Agent, leg: Any, account: Any) -> Connected:
        self.log.append(f"connect {agent.name}")
        return Connected(agent, 63.0, "customer")

    async def voicemail(self, call: Any, account: Any, why: str, collector: str | None) -> Any:
        self.log.append(f"voicemail for {collector}: {why}")
        return self._voicemail


def transfer(line: Line, agents: list[Agent], **cfg: Any) -> tuple[AgentTransfer, Journal]:
    journal = Journal()
    ticks = iter(range(0, 1000, 5))

    async def directory(account: AccountSummary) -> list[Agent]:
        return agents

    cfg = {"ring_timeout": 5.0, **cfg}
    return AgentTransfer(
        AgentsConfig(**cfg), line, directory, journal, lambda: next(ticks)
    ), journal


async def test_the_assigned_collector_answers_and_is_bridged() -> None:
    line = Line({"Dana Whitfield": "answered"})
    handoff, journal = transfer(line, [DANA, MARCUS])
    result = await handoff("call", ACCOUNT)
    assert (result.outcome, result.text) == ("connected", "connected to Dana Whitfield for 63 s")
    assert result.end_reason == "customer ended the agent call"
    assert line.log == [
        "hold",
        "ring Dana Whitfield 5",
        "unhold",
        "connect Dana Whitfield",
        "unhold",
    ]
    assert journal.kinds() == [
        "agent_transfer",
        "agent_ringing",
        "agent_answered",
        "agent_bridged",
        "agent_ended",
    ]


async def test_no_answer_then_busy_team_member_then_voicemail_for_the_assigned() -> None:
    line = Line(
        {"Dana Whitfield": "no_answer", "Marcus Lee": "busy"}, Voicemail(9.5, "pound", 3, 4)
    )
    handoff, journal = transfer(line, [DANA, MARCUS])
    result = await handoff("call", ACCOUNT)
    why = "Dana Whitfield did not answer (5 s); Marcus Lee was busy (486)"
    assert line.log == [
        "hold",
        "ring Dana Whitfield 5",
        "ring Marcus Lee 5",
        "unhold",
        f"voicemail for Dana Whitfield: {why}",
    ]
    assert (result.outcome, result.end_reason) == ("voicemail", "voicemail left")
    assert result.text == f"voicemail of 9.5 s left ({why})"
    assert journal.kinds().count("agent_ringing") == 2
    assert ("agent_busy", {"name": "Marcus Lee", "code": 486, "seconds": 5}) in journal.events


async def test_nobody_to_ring_goes_straight_to_voicemail_without_ringback() -> None:
    line = Line({}, Voicemail(3.0, "hang-up", 1, 2))
    handoff, _ = transfer(line, [])
    result = await handoff("call", ACCOUNT)
    assert line.log == ["voicemail for None: no collector to ring"]
    assert result.outcome == "voicemail"


async def test_voicemail_off_or_caller_gone_before_the_beep() -> None:
    line = Line({"Dana Whitfield": "failed"})
    off, _ = transfer(line, [DANA], voicemail=False)
    result = await off("call", ACCOUNT)
    assert (result.outcome, result.end_reason) == ("unavailable", None)
    assert "Dana Whitfield could not be reached (404)" in result.text
    gone, _ = transfer(Line({"Dana Whitfield": "no_answer"}, None), [DANA])
    result = await gone("call", ACCOUNT)
    assert (result.outcome, result.end_reason) == ("unavailable", "caller hung up")


def test_ring_outcome() -> None:
    assert ring_outcome(True, False, None) == "answered"
    assert ring_outcome(False, True, 487) == "no_answer"
    assert [ring_outcome(False, False, c) for c in (486, 600, 603)] == ["busy"] * 3
    assert [ring_outcome(False, False, c) for c in (408, 480)] == ["no_answer"] * 2
    assert [ring_outcome(False, False, c) for c in (404, 500, None)] == ["failed"] * 3


@pytest.fixture
def sessions(tmp_path: Path) -> Any:
    engine = make_engine(f"sqlite:///{tmp_path / 'v.db'}")
    create_schema(engine)
    made = make_sessions(engine)
    with made.begin() as session:
        session.add_all(
            [
                Collector(id=1, name="Zed Young", sip_uri="sip:zed@example"),
                Collector(id=2, name="Amy Adams", sip_uri=None),  # softphone only
                Collector(id=3, name="Bob Brown", sip_uri="sip:bob@example"),
                Collector(id=4, name="Cy Gone", sip_uri="sip:cy@example", active=False),
                Collector(id=5, name="Dee Nowhere", sip_uri=None),  # unreachable
                Collector(id=6, name="Eve Demo", sip_uri="sip:eve@collections.example"),
            ]
        )
        session.flush()
        session.add(
            Softphone(username="amy", realm="r", ha1="x" * 32, ha1b="y" * 32, collector_id=2)
        )
        session.add(
            Softphone(username="zed", realm="r", ha1="x" * 32, ha1b="y" * 32, collector_id=1)
        )
    yield made
    engine.dispose()


def names(agents: Sequence[Agent]) -> list[tuple[str, str]]:
    return [(a.name, a.uri) for a in agents]


def test_agents_assigned_first_then_the_team_by_name(sessions: Any) -> None:
    with sessions() as session:
        behind = agents_for(session, 1, realm="realm", proxy=True, try_team=True, team_size=3)
        alone = agents_for(session, 1, realm="realm", proxy=True, try_team=False, team_size=3)
        dev = agents_for(session, 1, realm="realm", proxy=False, try_team=True, team_size=1)
        nobody = agents_for(session, 5, realm="realm", proxy=False, try_team=False, team_size=3)
        unassigned = agents_for(
            session, None, realm="realm", proxy=True, try_team=True, team_size=9
        )
    # Behind Kamailio: softphones first choice; the inactive and unreachable are skipped.
    assert names(behind) == [
        ("Zed Young", "sip:zed@realm"),
        ("Amy Adams", "sip:amy@realm"),
        ("Bob Brown", "sip:bob@example"),
    ]
    assert names(alone) == [("Zed Young", "sip:zed@realm")]
    # Developer mode: configured sip_uri only (a softphone needs Kamailio's registrar).
    assert names(dev) == [("Zed Young", "sip:zed@example"), ("Bob Brown", "sip:bob@example")]
    assert nobody == []
    assert [a.name for a in unassigned] == ["Amy Adams", "Bob Brown", "Zed Young"]


class VmCall:
    """A customer call for the voicemail machine: scripted keys with their arrival times."""

    def __init__(
        self, keys: list[tuple[float, str | None]], clock: list[float], *, gone_at: str = ""
    ) -> None:
        self.keys, self.clock, self.gone_at = keys, clock, gone_at
        self.log: list[str] = []

    async def play(self, tokens: Sequence[str], *, barge_in: bool = True) -> None:
        self.log.append(f"play {' '.join(tokens)}")
        if self.gone_at == "greeting":
            raise HangUp()

    async def play_audio(self, pcm: np.ndarray, *, wait: bool = True) -> None:
        self.log.append("beep")

    def clear_keys(self) -> None:
        self.log.append("clear")

    async def next_key(self, timeout: float) -> str | None:
        if not self.keys:
            self.clock[0] += timeout
            return None
        at, key = self.keys.pop(0)
        if key == "HANGUP":
            self.clock[0] = at
            raise HangUp()
        self.clock[0] = at
        return key


class Capture:
    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.started: float | None = None

    async def start(self) -> None:
        self.started = self.clock[0]

    async def stop(self) -> float:
        assert self.started is not None
        return self.clock[0] - self.started


@pytest.mark.parametrize(
    ("keys", "ended_by", "seconds"),
    [
        ([(4.0, "1"), (9.0, "#")], "pound", 9.0),  # other keys are part of the message
        ([(6.0, "HANGUP")], "hang-up", 6.0),
        ([(2.0, "5")], "time limit", 30.0),
    ],
)
async def test_voicemail_ends_on_pound_hangup_or_time_limit(
    keys: list[tuple[float, str]], ended_by: str, seconds: float
) -> None:
    clock = [0.0]
    call = VmCall(list(keys), clock)
    message = await record_message(
        call, Capture(clock), 30.0, np.zeros(8, np.int16), lambda: clock[0]
    )
    assert call.log == ["play voicemail_greeting", "beep", "clear"]
    assert (message.started, message.ended_by, message.seconds) == (True, ended_by, seconds)


async def test_hanging_up_during_the_greeting_leaves_no_message() -> None:
    clock = [0.0]
    capture = Capture(clock)
    call = VmCall([], clock, gone_at="greeting")
    message = await record_message(call, capture, 30.0, np.zeros(8, np.int16), lambda: clock[0])
    assert (message.started, message.ended_by) == (False, "hang-up before the beep")
    assert capture.started is None


def test_wav_writer_keeps_channels_apart_and_in_step(tmp_path: Path) -> None:
    frame = 640
    path = tmp_path / "two.wav"
    writer = WavWriter(path, 2, frame_bytes=frame)
    left, right = writer.sink(0), writer.sink(1)
    for i in range(50):
        left(np.full(320, 1000 + i, dtype="<i2").tobytes())
        right(np.full(320, -2000 - i, dtype="<i2").tobytes())
    for _ in range(40):  # the right call left the bridge: padded with silence after a while
        left(np.full(320, 7, dtype="<i2").tobytes())
    seconds = writer.close()
    assert seconds == pytest.approx(90 * 0.02)
    samples, rate, channels = read_growing_wav(path)
    assert (rate, channels, samples.shape) == (16000, 2, (90 * 320, 2))
    assert samples[0].tolist() == [1000, -2000] and samples[49 * 320].tolist() == [1049, -2049]
    assert samples[-1].tolist() == [7, 0]
    data, _ = soundfile.read(path, dtype="int16")  # sizes written at close: a valid WAV
    assert data.shape == (90 * 320, 2)


def test_wav_writer_caps_length_and_writes_silence_while_paused(tmp_path: Path) -> None:
    writer = WavWriter(tmp_path / "vm.wav", 1, frame_bytes=640, max_seconds=0.1)
    writer.paused = True
    sink = writer.sink(0)
    for _ in range(20):
        sink(np.full(320, 500, dtype="<i2").tobytes())
    assert writer.close() == pytest.approx(0.1)
    samples, _, _ = read_growing_wav(tmp_path / "vm.wav")
    assert samples.shape == (1600, 1) and not samples.any()


INVITE = (
    "INVITE sip:+12125550101@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n"
    "From: <sip:alice@127.0.0.1>;tag=1\r\nx-voice-softphone:  alice \r\n"
    "Content-Length: 0\r\n\r\nX-Voice-Softphone: mallory\r\n"
)


def test_invite_headers_are_read_safely() -> None:
    assert header(INVITE, "X-Voice-Softphone") == "alice"  # head only, case-insensitive
    assert softphone_of(INVITE) == "alice"
    assert request_user(INVITE) == "+12125550101"
    assert softphone_of(INVITE.replace(" alice ", "Al ice")) is None
    assert softphone_of(INVITE.replace("x-voice-softphone:  alice \r\n", "")) is None
    assert request_user("garbage") is None


def test_reason_header_is_quoted_and_bounded() -> None:
    assert (
        reason_header(403, 'outside "hours"\r\nX: y')
        == "SIP;cause=403;text=\"outside 'hours'  X: y\""
    )
    assert len(reason_header(403, "x" * 500)) < 240


def test_status_and_caller_id() -> None:
    events: list[tuple[str, dict[str, object]]] = [
        ("click_to_call", {}),
        ("collector_ringing", {}),
        ("collector_answered", {}),
        ("outcome", {}),
    ]
    assert status_of(events) == "collector_answered"
    assert status_of([]) == "unknown"
    assert caller_id_headers("", "realm") == (None, ())
    assert caller_id_headers("+12125550100", "realm") == (
        "<sip:+12125550100@realm>",
        (("P-Asserted-Identity", "<sip:+12125550100@realm>"),),
    )
