"""Collector-placed calls as two scripts: click-to-call (the web page) and a softphone's call.

Both end the same way (`connect_customer`): the customer is dialled through Kamailio
(`sip:+1...@<realm>`, which Kamailio sends to `kamailio.gateway`, the trunk) presenting the
caller ID in From and P-Asserted-Identity while the collector hears ringback, then customer
and collector are bridged and recorded on two channels. Each is one outbound `calls` row on
the account; its events (voice/calls/outbound.py `STATUS_EVENTS`) tell how it stands, and
its note, by the collector, says how it ended.

    click_to_call:  collector_ringing -> collector_answered | collector_no_answer | _busy ...
    softphone_call: (the softphone's INVITE is answered 200) -> the collector is on the line
    both:           dialling_customer -> customer_answered | _busy | ... -> bridged -> ended

Pure over small interfaces (`Line`: voice/calls/line.py; `Log`: voice/calls/journal.py; the
calls: voice/calls/call.py), so both run against fakes in unit tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from accounts.reach import Agent
from voice.calls.outbound import SoftphoneCall, caller_id_headers, sip_uri
from voice.ivr import tones
from voice.ivr.call import HangUp
from voice.ivr.transfer import Ring, ring_outcome

log = logging.getLogger(__name__)


class Line(Protocol):
    waiting: Any

    async def hold(self, call: Any) -> None: ...
    async def unhold(self, call: Any) -> None: ...
    async def ring_uri(self, uri: str, timeout: float, **caller_id: Any) -> Ring:
        """Ring `uri` up to `timeout` s; `caller_id`: `from_uri`, `headers` presenting it."""
        ...

    async def bridge(
        self, customer: Any, agent: Any, *, collector: str, user: str | None = None
    ) -> Any:
        """Until either hangs up: `seconds`, `ended_by`."""
        ...


class Log(Protocol):
    call_id: int

    async def event(self, kind: str, detail: dict[str, Any]) -> None: ...
    async def answered(self) -> None: ...
    async def attach_attempt(self, attempt: int) -> None: ...
    async def close(self, status: str, reason: str, summary: str, author: str) -> None: ...


@dataclass(frozen=True)
class Dialling:
    """How customers are reached: Kamailio's realm and how long they may ring."""

    realm: str
    customer_ring_timeout: float


async def click_to_call(
    leg: Any,
    agent: Agent,
    line: Line,
    log_: Log,
    dialling: Dialling,
    *,
    customer: str,
    caller_id: str,
    user: str,
    ring_timeout: float,
) -> None:
    """The collector's phone (`leg`, placed already) rings; once they answer, the customer."""
    head = f"Click-to-call to {customer} by {agent.name} ({agent.via}) for {user}"

    async def script() -> tuple[str, str]:
        await log_.event("collector_ringing", {"name": agent.name, "via": agent.via})
        try:
            answered = await asyncio.wait_for(leg.wait_answered(), ring_timeout)
        except TimeoutError:
            answered = False
        if not answered or leg.ended:
            timed_out = not leg.ended
            await leg.hangup()
            outcome = ring_outcome(False, timed_out, leg.end_code)
            await log_.event("collector_" + outcome, {"code": leg.end_code})
            words = outcome.replace("_", " ")
            return f"collector {words}", f"The collector's phone: {words}."
        await log_.event("collector_answered", {"name": agent.name})
        line.waiting = leg
        return await connect_customer(
            line,
            log_,
            dialling,
            leg,
            e164=customer,
            caller_id=caller_id,
            collector=agent.name,
            user=user,
        )

    await _noted(script(), "click-to-call", leg, log_, head, caller_id, agent.name)


async def softphone_call(
    phone: Any,
    call: SoftphoneCall,
    line: Line,
    log_: Log,
    dialling: Dialling,
    *,
    caller_id: str,
    answer: Callable[[int], Awaitable[object]],
) -> None:
    """A collector's softphone dialled `call.e164` and the check allowed it: answer the
    softphone (`answer(200)`), then reach the customer."""
    head = f"Outbound call to {call.e164} by {call.collector} (softphone {call.softphone})"

    async def script() -> tuple[str, str]:
        await log_.attach_attempt(call.attempt)
        await log_.event(
            "softphone_call",
            {
                "softphone": call.softphone,
                "collector_id": call.collector_id,
                "collector": call.collector,
                "to": call.e164,
                "account": call.account,
                "caller_id": caller_id or None,
            },
        )
        await answer(200)
        if not await phone.wait_answered():
            return "collector hung up before the customer was dialled", ""
        line.waiting = phone
        return await connect_customer(
            line,
            log_,
            dialling,
            phone,
            e164=call.e164,
            caller_id=caller_id,
            collector=call.collector,
            user=f"softphone:{call.softphone}",
        )

    await _noted(script(), "softphone call", phone, log_, head, caller_id, call.collector)


async def _noted(
    script: Coroutine[Any, Any, tuple[str, str]],
    what: str,
    collector_leg: Any,
    log_: Log,
    head: str,
    caller_id: str,
    author: str,
) -> None:
    """Run a collector call's `script` (its end reason and a sentence for the note); however
    it ends, the call is closed with its note, by the collector."""
    status, reason, summary = "completed", "", ""
    try:
        reason, summary = await script
    except asyncio.CancelledError:
        status, reason = "interrupted", "server shutting down"
        raise
    except Exception as exc:
        log.exception("%s %d failed", what, log_.call_id)
        status, reason = "failed", f"error: {type(exc).__name__}"
        await collector_leg.hangup()
    finally:
        head += f", presenting {caller_id}." if caller_id else "."
        await log_.close(status, reason, f"{head}\n{summary}".strip(), author)


async def connect_customer(
    line: Line,
    log_: Log,
    dialling: Dialling,
    collector_leg: Any,
    *,
    e164: str,
    caller_id: str,
    collector: str,
    user: str,
) -> tuple[str, str]:
    """Dial the customer while the collector hears ringback, then bridge them.

    Returns (end reason, a sentence for the note). The collector's leg must be answered.
    """
    from_uri, headers = caller_id_headers(caller_id, dialling.realm)
    await log_.event("dialling_customer", {"to": e164, "caller_id": caller_id or None})
    await line.hold(collector_leg)
    try:
        ring = await line.ring_uri(
            sip_uri(e164, dialling.realm),
            dialling.customer_ring_timeout,
            from_uri=from_uri,
            headers=headers,
        )
    except HangUp:
        await log_.event("ended", {"seconds": 0, "ended_by": "collector"})
        return "collector hung up before the customer answered", "The collector hung up first."
    finally:
        await line.unhold(collector_leg)
    await log_.event("customer_" + ring.outcome, {"code": ring.code})
    if ring.outcome != "answered":
        prompt = "agent_busy_customer" if ring.outcome == "busy" else "agent_no_answer_customer"
        try:
            await collector_leg.play([prompt], barge_in=False)
            await collector_leg.play_audio(tones.error())
        except HangUp:
            pass
        await collector_leg.hangup()
        what = {"busy": "was busy", "no_answer": "did not answer"}.get(ring.outcome, "failed")
        return f"customer {what}", f"The customer {what} ({ring.code or 'no response'})."
    await log_.answered()
    await log_.event("bridged", {"collector": collector})
    done = await line.bridge(ring.leg, collector_leg, collector=collector, user=user)
    await log_.event("ended", {"seconds": round(done.seconds, 1), "ended_by": done.ended_by})
    return (
        f"{done.ended_by} hung up",
        f"Talked {done.seconds:.0f} s; the {done.ended_by} hung up.",
    )
