"""Starting collector-placed calls in the worker: the inputs and the softphone's call checked,
the call journaled, then its script (voice/calls/collector.py) started as a `CallSession`.

- Click-to-call (the control channel's `click_to_call`, asked by the API once the guardrails
  allowed it): the collector's phone is rung first; the answer is the call's id.
- A softphone's INVITE (Kamailio's `X-Voice-Softphone`): `check_softphone_call` must allow it
  (voice/calls/outbound.py), else 403 with a Reason header, audited, and nothing is dialled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from accounts.guardrails import Guardrails, Refusal
from accounts.phones import E164
from accounts.reach import Agent, collector_route
from accounts.retry import retry_db
from voice.calls import collector as scripts
from voice.calls import outbound
from voice.calls.journal import EVENT_TRIES
from voice.calls.kit import CallKit
from voice.calls.session import CallSession, CallTable
from voice.sip.engine import SipEngine
from voice.sip.uri import reason_header

log = logging.getLogger(__name__)

Start = Callable[[CallSession, Coroutine[Any, Any, None], str], None]


class PlacedCalls:
    def __init__(
        self, kit: CallKit, table: CallTable, engine: SipEngine, start: Start, proxy: bool
    ) -> None:
        self.kit, self.table, self.engine, self.start, self.proxy = kit, table, engine, start, proxy
        self.cfg = kit.cfg
        self.guardrails = Guardrails(kit.cfg.guardrails, kit.sessions)
        self.dialling = scripts.Dialling(
            kit.cfg.kamailio.realm, kit.cfg.agents.customer_ring_timeout
        )

    async def click_to_call(
        self,
        collector: int | str,
        customer: str,
        account_id: int,
        user: str,
        caller_id: str = "",
        attempt: int | None = None,
    ) -> dict[str, Any]:
        """Ring the collector, then dial `customer` and bridge them.

        Returns once the collector's phone is ringing: {"call_id", "worker", "sip_call_id"}.
        The lead's API checks the guardrails before asking; the worker checks the inputs.
        """
        kit = self.kit
        if not self.proxy:
            raise RuntimeError("click-to-call needs Kamailio (workers.count != 1)")
        if not E164.fullmatch(str(customer)):
            raise ValueError("'customer' must be an E.164 number like +12125550101")
        caller_id = caller_id or self.cfg.guardrails.caller_id
        if caller_id and not E164.fullmatch(caller_id):
            raise ValueError("'caller_id' must be an E.164 number or empty")
        if not isinstance(user, str) or not 1 <= len(user) <= 100:
            raise ValueError("'user' must name who asked (1-100 characters)")
        agent = await asyncio.to_thread(self._agent_of, collector)
        if agent is None:
            raise LookupError(f"collector {collector!r} has no softphone or sip_uri to ring")
        leg = await kit.place(agent.uri, from_uri=None)
        journal = await kit.open_log(
            direction="outbound",
            caller=caller_id or None,
            callee=customer,
            sip_call_id=leg.identity.sip_call_id,
        )
        if attempt is None:
            await journal.set_account(account_id)
        else:  # the API's reservation is this call (accounts/attempts.py): counted once
            await journal.attach_attempt(attempt)
        session = CallSession(leg)
        media = kit.media(journal)
        self.table.add(session)
        self.table.journaled(session, journal, media)
        await journal.event(
            "click_to_call",
            {
                "collector_id": agent.collector_id,
                "collector": agent.name,
                "via": agent.via,
                "user": user,
                "to": customer,
                "caller_id": caller_id or None,
            },
        )
        run = scripts.click_to_call(
            leg,
            agent,
            kit.line(journal, media),
            journal,
            self.dialling,
            customer=customer,
            caller_id=caller_id,
            user=user,
            ring_timeout=self.cfg.agents.ring_timeout,
        )
        self.start(session, run, f"c2c-{journal.call_id}")
        # Answered at once, its rows maybe still behind: the API and the page wait for them
        # (voice/api/dialout.py `place`). Waiting here could outlast the API's 10 s control
        # timeout when the database is busy (soak, 2026-12-04).
        return {
            "call_id": journal.call_id,
            "worker": kit.worker,
            "sip_call_id": leg.identity.sip_call_id,
        }

    def _agent_of(self, collector: int | str) -> Agent | None:
        with self.kit.sessions() as session:
            return collector_route(
                session, collector, realm=self.cfg.kamailio.realm, proxy=self.proxy
            )

    async def softphone(self, session: CallSession) -> None:
        """A collector's softphone dialled a number: check it, refuse (403) or connect it."""
        phone, engine, kit = session.call, self.engine, self.kit
        ident = phone.identity
        assert ident.softphone is not None

        def check() -> outbound.SoftphoneCall | Refusal:
            with kit.sessions.begin() as db:  # commits the attempt it reserves
                return outbound.check_softphone_call(
                    self.cfg, db, self.guardrails, ident.softphone or "", ident.dialled
                )

        try:
            decision = await retry_db(EVENT_TRIES, check)
        except Exception:
            log.exception("softphone call from %s could not be checked", ident.softphone)
            await engine.answer(ident.key, 500, "Server Internal Error")
            return
        if isinstance(decision, Refusal):
            await self._refuse(ident.key, ident.softphone, ident.dialled, decision)
            return
        caller_id = self.cfg.guardrails.caller_id
        journal = await kit.open_log(
            direction="outbound",
            caller=caller_id or None,
            callee=decision.e164,
            sip_call_id=ident.sip_call_id,
        )
        media = kit.media(journal)
        self.table.journaled(session, journal, media)

        async def answer(code: int) -> None:
            await engine.answer(phone.key, code)

        line = kit.line(journal, media)
        await scripts.softphone_call(
            phone, decision, line, journal, self.dialling, caller_id=caller_id, answer=answer
        )

    async def _refuse(
        self, key: int, softphone: str, dialled: str | None, refusal: Refusal
    ) -> None:
        log.warning(
            "softphone %s: call to %r refused (%s): %s",
            softphone,
            dialled,
            refusal.rule,
            refusal.reason,
        )
        self.kit.metrics["softphone_calls_refused_total"] += 1
        reason = (("Reason", reason_header(403, refusal.reason)),)
        await self.engine.answer(key, 403, "Forbidden", reason)
        await asyncio.to_thread(
            outbound.audit_softphone_refusal, self.kit.sessions, softphone, None, dialled, refusal
        )
