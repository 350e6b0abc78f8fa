"""Agent transfer (menu 0): ring the account's collector, then the team, bridge; else voicemail.

Who is rung, in order (`agents_for`):
1. the account's collector (`Account.collector_id`), if active;
2. with `agents.try_team`, "the team": the other active collectors, by name, at most
   `agents.team_size` of them.
A collector is reached through their softphone (`softphones.collector_id`; dialled as
`sip:USER@<kamailio.realm>` through Kamailio, so only when the worker has a proxy), else their
configured `Collector.sip_uri` (dialled directly: developer mode). A collector with neither is
skipped. Each is rung for `agents.ring_timeout` seconds while the customer hears ringback;
busy (486/600/603), declined or unreachable moves on at once. Nobody answered, or nobody to
ring: voicemail (`agents.voicemail`), flagged for the account's collector.

`AgentTransfer` is pure over `AgentLine` (the SIP side, voice/routing/line.py in the worker)
and the call's journal, so the ordering runs against fakes in unit tests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from accounts.models import Collector, Softphone
from accounts.views import AccountSummary
from voice.config import AgentsConfig
from voice.ivr.inbound import Handoff, Journal

BUSY_CODES = frozenset({486, 600, 603})
# Names that never resolve (RFC 2606, RFC 6761): the demo data's placeholders. Dialling one
# would only stall the SIP thread on a DNS lookup.
RESERVED_DOMAINS = (".example", ".invalid", ".test", ".localhost")


@dataclass(frozen=True)
class Agent:
    collector_id: int
    name: str
    uri: str  # the SIP URI dialled
    via: str  # "softphone alice" or "sip_uri"


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


def route_of(
    collector: Collector, softphones: list[str], *, realm: str, proxy: bool
) -> Agent | None:
    """How to reach a collector: a softphone through Kamailio, else their sip_uri."""
    if proxy and softphones:
        user = sorted(softphones)[0]
        return Agent(collector.id, collector.name, f"sip:{user}@{realm}", f"softphone {user}")
    uri = (collector.sip_uri or "").strip()
    host = uri.rsplit("@", 1)[-1].split(":", 1)[0].split(";", 1)[0].lower()
    if uri.lower().startswith("sip:") and not host.endswith(RESERVED_DOMAINS):
        return Agent(collector.id, collector.name, uri, "sip_uri")
    return None


def agents_for(
    session: Session,
    collector_id: int | None,
    *,
    realm: str,
    proxy: bool,
    try_team: bool,
    team_size: int,
) -> list[Agent]:
    """Whom to ring for an account assigned to `collector_id`, in order (module docstring)."""
    collectors = list(
        session.scalars(
            select(Collector).where(Collector.active.is_(True)).order_by(Collector.name)
        )
    )
    phones: dict[int, list[str]] = {}
    for user, owner in session.execute(select(Softphone.username, Softphone.collector_id)):
        if owner is not None:
            phones.setdefault(owner, []).append(user)
    routes = {
        c.id: route
        for c in collectors
        if (route := route_of(c, phones.get(c.id, []), realm=realm, proxy=proxy)) is not None
    }
    ordered = [routes[collector_id]] if collector_id in routes else []
    if try_team:
        team = [routes[c.id] for c in collectors if c.id != collector_id and c.id in routes]
        ordered += team[:team_size]
    return ordered
