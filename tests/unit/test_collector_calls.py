"""The two collector-placed call scripts (voice/calls/collector.py) over fakes: click-to-call
and a softphone's call, from the collector's phone to the bridge, and every way they end."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from accounts.reach import Agent
from voice.calls import collector
from voice.calls.collector import Dialling
from voice.calls.outbound import SoftphoneCall
from voice.ivr.call import HangUp
from voice.ivr.transfer import Ring

REALM = "voice.test"
DIALLING = Dialling(REALM, customer_ring_timeout=30.0)
DANA = Agent(3, "Dana Whitfield", f"sip:alice@{REALM}", "softphone alice")
CUSTOMER = "+12125550101"
CALLER_ID = "+18005550199"


class FakeLeg:
    """A SIP call: answers (or not) when asked, records what is played and the hang-up."""

    def __init__(self, answers: bool = True, end_code: int | None = None) -> None:
        self.answers = answers
        self.ended = end_code is not None
        self.end_code = end_code
        self.hung_up = False
        self.played: list[Any] = []

    async def wait_answered(self) -> bool:
        if not self.answers and not self.ended:
            await asyncio.sleep(3600)  # rings out
        return self.answers

    async def hangup(self) -> None:
        self.hung_up = True

    async def play(self, tokens: list[str], *, barge_in: bool = True) -> None:
        self.played.append(list(tokens))

    async def play_audio(self, pcm: Any, *, wait: bool = True) -> None:
        self.played.append("tone")


@dataclass
class Bridged:
    seconds: float
    ended_by: str


@dataclass
class FakeLine:
    """The SIP side: the customer's ring is scripted; hold, ring and bridge are recorded."""

    ring: Ring | Exception
    bridge_fails: bool = False
    waiting: Any = None
    did: list[Any] = field(default_factory=list)

    async def hold(self, call: Any) -> None:
        self.did.append("hold")

    async def unhold(self, call: Any) -> None:
        self.did.append("unhold")

    async def ring_uri(self, uri: str, timeout: float, **caller_id: Any) -> Ring:
        self.did.append(("ring", uri, timeout, caller_id["from_uri"], caller_id["headers"]))
        if isinstance(self.ring, Exception):
            raise self.ring
        return self.ring

    async def bridge(self, customer: Any, agent: Any, *, collector: str, user: str | None = None):
        self.did.append(("bridge", customer, agent, collector, user))
        if self.bridge_fails:
            raise RuntimeError("the bridge broke")
        return Bridged(63.2, "customer")


@dataclass
class FakeLog:
    call_id: int = 41
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answered_at: int = 0
    attempts: list[int] = field(default_factory=list)
    closed: list[tuple[str, str, str, str]] = field(default_factory=list)

    async def event(self, kind: str, detail: dict[str, Any]) -> None:
        self.events.append((kind, detail))

    async def answered(self) -> None:
        self.answered_at += 1

    async def attach_attempt(self, attempt: int) -> None:
        self.attempts.append(attempt)

    async def close(self, status: str, reason: str, summary: str, author: str) -> None:
        self.closed.append((status, reason, summary, author))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


def answered_customer() -> tuple[Ring, FakeLeg]:
    customer = FakeLeg()
    return Ring("answered", 200, customer), customer


async def click(leg: FakeLeg, line: FakeLine, log: FakeLog, **kw: Any) -> None:
    args: dict[str, Any] = {"customer": CUSTOMER, "caller_id": CALLER_ID, "user": "dana"}
    await collector.click_to_call(
        leg, DANA, line, log, DIALLING, ring_timeout=kw.pop("ring_timeout", 20.0), **args | kw
    )


async def test_click_to_call_rings_the_collector_then_the_customer_and_bridges_them() -> None:
    ring, customer = answered_customer()
    leg, line, log = FakeLeg(), FakeLine(ring), FakeLog()
    await click(leg, line, log)
    assert log.kinds() == [
        "collector_ringing",
        "collector_answered",
        "dialling_customer",
        "customer_answered",
        "bridged",
        "ended",
    ]
    assert log.events[2][1] == {"to": CUSTOMER, "caller_id": CALLER_ID}
    assert log.events[-1][1] == {"seconds": 63.2, "ended_by": "customer"}
    assert line.waiting is leg  # the collector hanging up stops the customer's ringing
    presenting = f"<sip:{CALLER_ID}@{REALM}>"
    assert line.did == [
        "hold",
        (
            "ring",
            f"sip:{CUSTOMER}@{REALM}",
            30.0,
            presenting,
            (("P-Asserted-Identity", presenting),),
        ),
        "unhold",
        ("bridge", customer, leg, "Dana Whitfield", "dana"),
    ]
    assert log.answered_at == 1  # the call's answer time is the customer's
    [(status, reason, summary, author)] = log.closed
    assert (status, reason, author) == ("completed", "customer hung up", "Dana Whitfield")
    assert summary == (
        f"Click-to-call to {CUSTOMER} by Dana Whitfield (softphone alice) for dana, presenting"
        f" {CALLER_ID}.\nTalked 63 s; the customer hung up."
    )


@pytest.mark.parametrize(
    ("leg", "outcome"),
    [(FakeLeg(answers=False), "no_answer"), (FakeLeg(False, end_code=486), "busy")],
    ids=["rings-out", "busy"],
)
async def test_a_collector_who_does_not_answer_means_nobody_is_dialled(
    leg: FakeLeg, outcome: str
) -> None:
    line, log = FakeLine(answered_customer()[0]), FakeLog()
    await click(leg, line, log, ring_timeout=0.05, caller_id="")
    assert log.kinds() == ["collector_ringing", f"collector_{outcome}"]
    assert leg.hung_up and line.did == [] and log.answered_at == 0
    words = outcome.replace("_", " ")
    [(status, reason, summary, _)] = log.closed
    assert (status, reason) == ("completed", f"collector {words}")
    assert summary.endswith(f"for dana.\nThe collector's phone: {words}.")  # no caller ID


@pytest.mark.parametrize(
    ("outcome", "prompt", "what"),
    [
        ("busy", "agent_busy_customer", "was busy"),
        ("no_answer", "agent_no_answer_customer", "did not answer"),
        ("failed", "agent_no_answer_customer", "failed"),
    ],
)
async def test_a_customer_who_does_not_answer_is_told_to_the_collector(
    outcome: str, prompt: str, what: str
) -> None:
    leg, line, log = (
        FakeLeg(),
        FakeLine(Ring(outcome, 486 if outcome == "busy" else None)),
        FakeLog(),
    )
    await click(leg, line, log)
    assert log.kinds()[-2:] == ["dialling_customer", f"customer_{outcome}"]
    assert leg.played == [[prompt], "tone"] and leg.hung_up
    assert log.answered_at == 0 and not any(
        d[0] == "bridge" for d in line.did if isinstance(d, tuple)
    )
    [(_, reason, summary, _)] = log.closed
    assert reason == f"customer {what}"
    code = "486" if outcome == "busy" else "no response"
    assert summary.endswith(f"The customer {what} ({code}).")


async def test_the_collector_hanging_up_while_the_customer_rings_ends_the_call() -> None:
    leg, line, log = FakeLeg(), FakeLine(HangUp()), FakeLog()
    await click(leg, line, log)
    assert log.events[-1] == ("ended", {"seconds": 0, "ended_by": "collector"})
    assert line.did[-1] == "unhold"  # ringback stops either way
    [(status, reason, summary, _)] = log.closed
    assert (status, reason) == ("completed", "collector hung up before the customer answered")
    assert summary.endswith("The collector hung up first.")


async def test_a_failing_script_still_closes_the_call_with_its_note() -> None:
    leg, line, log = FakeLeg(), FakeLine(answered_customer()[0], bridge_fails=True), FakeLog()
    await click(leg, line, log)
    assert leg.hung_up
    [(status, reason, _, author)] = log.closed
    assert (status, reason, author) == ("failed", "error: RuntimeError", "Dana Whitfield")


async def test_a_shutdown_interrupts_the_call_and_its_note_says_so() -> None:
    leg, line, log = FakeLeg(answers=False), FakeLine(answered_customer()[0]), FakeLog()
    task = asyncio.create_task(click(leg, line, log, ring_timeout=3600.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [(status, reason, _, _)] = log.closed
    assert (status, reason) == ("interrupted", "server shutting down")


SOFTPHONE = SoftphoneCall("alice", 3, "Dana Whitfield", 7, "10042", CUSTOMER, attempt=99)


async def soft(phone: FakeLeg, line: FakeLine, log: FakeLog, answers: list[int]) -> None:
    async def answer(code: int) -> None:
        answers.append(code)

    await collector.softphone_call(
        phone, SOFTPHONE, line, log, DIALLING, caller_id=CALLER_ID, answer=answer
    )


async def test_a_softphone_call_is_the_reserved_attempt_answered_then_bridged() -> None:
    ring, customer = answered_customer()
    phone, line, log, answers = FakeLeg(), FakeLine(ring), FakeLog(), []
    await soft(phone, line, log, answers)
    assert log.attempts == [99] and answers == [200]
    assert log.events[0] == (
        "softphone_call",
        {
            "softphone": "alice",
            "collector_id": 3,
            "collector": "Dana Whitfield",
            "to": CUSTOMER,
            "account": "10042",
            "caller_id": CALLER_ID,
        },
    )
    assert log.kinds()[1:] == [
        "dialling_customer",
        "customer_answered",
        "bridged",
        "ended",
    ]
    assert line.waiting is phone
    assert line.did[-1] == ("bridge", customer, phone, "Dana Whitfield", "softphone:alice")
    [(status, reason, summary, author)] = log.closed
    assert (status, reason, author) == ("completed", "customer hung up", "Dana Whitfield")
    assert summary.startswith(
        f"Outbound call to {CUSTOMER} by Dana Whitfield (softphone alice), presenting {CALLER_ID}."
    )


async def test_a_softphone_that_hangs_up_first_dials_nobody() -> None:
    phone, line, log = FakeLeg(answers=False, end_code=487), FakeLine(HangUp()), FakeLog()
    answers: list[int] = []
    await soft(phone, line, log, answers)
    assert answers == [200] and line.did == [] and log.kinds() == ["softphone_call"]
    [(status, reason, _, _)] = log.closed
    assert (status, reason) == ("completed", "collector hung up before the customer was dialled")
