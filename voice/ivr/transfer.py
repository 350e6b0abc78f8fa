"""Agent transfer (menu 0): ring the account's collector, then the team, bridge; else voicemail.

Who is rung, in order (accounts/reach.py `agents_for`):
1. the account's collector (`Account.collector_id`), if active;
2. with `agents.try_team`, "the team": the other active collectors, by name, at most
   `agents.team_size` of them.
A collector is reached through their softphone, else their configured `Collector.sip_uri`
(accounts/reach.py `route_of`); a collector with neither is skipped. Each is rung for
`agents.ring_timeout` seconds while the customer hears ringback; busy (486/600/603), declined
or unreachable moves on at once. Nobody answered, or nobody to
ring: voicemail (`agents.voicemail`), flagged for the account's collector.

`AgentTransfer` is pure over `AgentLine` (the SIP side, voice/calls/line.py in the worker)
and the call's journal, so the ordering runs against fakes in unit tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from accounts.reach import Agent
from accounts.views import AccountSummary
from voice.config import AgentsConfig
from voice.ivr.inbound import Handoff, Journal

BUSY_CODES = frozenset({486, 600, 603})


@dataclass
class Ring:
    """How ringing one agent ended: answered (with the live leg), busy, no_answer or failed."""

    outcome: str
    code: int | None = None
    leg: Any = None


@dataclass
class Attempt:
    agent: Agent
    outcome: str
    code: int | None = None
    seconds: float = 0.0  # ringing time

    def text(self) -> str:
        if self.outcome == "no_answer":
            return f"{self.agent.name} did not answer ({self.seconds:.0f} s)"
        if self.outcome == "busy":
            return f"{self.agent.name} was busy ({self.code})"
        return f"{self.agent.name} could not be reached ({self.code or 'no response'})"


@dataclass
class Connected:
    agent: Agent
    seconds: float  # bridged
    ended_by: str  # "customer" or "collector"


@dataclass
class Voicemail:
    seconds: float
    ended_by: str
    recording_id: int | None
    note_id: int | None


class AgentLine(Protocol):
    async def hold(self, call: Any) -> None:
        """Ringback (or hold audio) to the customer until `unhold`."""
        ...

    async def unhold(self, call: Any) -> None: ...
    async def ring(self, agent: Agent, timeout: float) -> Ring: ...
    async def connect(
        self, call: Any, agent: Agent, leg: Any, account: AccountSummary
    ) -> Connected:
        """Bridge the customer and the agent's answered leg until either hangs up."""
        ...

    async def voicemail(
        self, call: Any, account: AccountSummary, why: str, collector: str | None
    ) -> Voicemail | None:
        """Take a message; None if the caller left before the beep."""
        ...


@dataclass
class AgentTransfer:
    """The IVR's `AgentHandoff` (voice/ivr/inbound.py) for one call."""

    cfg: AgentsConfig
    line: AgentLine
    directory: Callable[[AccountSummary], Awaitable[list[Agent]]]
    journal: Journal
    clock: Callable[[], float]
    attempts: list[Attempt] = field(default_factory=list)

    async def __call__(self, call: Any, account: AccountSummary) -> Handoff:
        agents = await self.directory(account)
        await self.journal.event(
            "agent_transfer", {"agents": [{"name": a.name, "via": a.via} for a in agents]}
        )
        assigned = next((a.name for a in agents if a.collector_id == account.collector_id), None)
        if agents:
            await self.line.hold(call)
            try:
                for agent in agents:
                    ring = await self._ring(agent)
                    if ring.outcome == "answered":
                        await self.line.unhold(call)
                        await self.journal.event(
                            "agent_bridged", {"name": agent.name, "via": agent.via}
                        )
                        done = await self.line.connect(call, agent, ring.leg, account)
                        await self.journal.event(
                            "agent_ended",
                            {
                                "name": agent.name,
                                "seconds": round(done.seconds, 1),
                                "ended_by": done.ended_by,
                            },
                        )
                        text = f"connected to {agent.name} for {done.seconds:.0f} s"
                        return Handoff("connected", text, f"{done.ended_by} ended the agent call")
            finally:
                await self.line.unhold(call)
        why = "; ".join(a.text() for a in self.attempts) or "no collector to ring"
        if not self.cfg.voicemail:
            return Handoff("unavailable", f"nobody available ({why})")
        message = await self.line.voicemail(call, account, why, assigned)
        if message is None:
            return Handoff(
                "unavailable", f"nobody available ({why}); no message left", "caller hung up"
            )
        return Handoff(
            "voicemail",
            f"voicemail of {message.seconds:.1f} s left ({why})",
            "voicemail left",
        )

    async def _ring(self, agent: Agent) -> Ring:
        await self.journal.event("agent_ringing", {"name": agent.name, "via": agent.via})
        started = self.clock()
        ring = await self.line.ring(agent, self.cfg.ring_timeout)
        seconds = self.clock() - started
        if ring.outcome != "answered":
            self.attempts.append(Attempt(agent, ring.outcome, ring.code, seconds))
        await self.journal.event(
            "agent_" + ring.outcome,
            {"name": agent.name, "code": ring.code, "seconds": round(seconds, 1)},
        )
        return ring


def ring_outcome(answered: bool, timed_out: bool, code: int | None) -> str:
    """answered, no_answer (rang out), busy (486/600/603) or failed (anything else)."""
    if answered:
        return "answered"
    if timed_out:
        return "no_answer"
    if code in BUSY_CODES:
        return "busy"
    if code in (408, 480, 487):
        return "no_answer"
    return "failed"
