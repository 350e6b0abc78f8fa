"""An IVR call in the worker: journal it, record it, listen to it, run the flow on it.

The flow itself is the pure script voice/ivr/inbound.py (`InboundFlow`); this gives it a real
call (voice/calls/call.py), the ledger, the call's `CallLog`, right-party verification, promises
to pay, and agent transfer (voice/ivr/transfer.py over voice/calls/line.py). It runs the
same for a caller who called us and for a call the worker placed (`dial`: direction outbound).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from accounts.promises import CallPromises
from accounts.reach import Agent, agents_for
from accounts.retry import retry_db
from accounts.services import Ledger
from accounts.verification import CallVerifier, Lockout, Verifications
from accounts.views import AccountSummary
from voice.calls.journal import EVENT_TRIES, CallLog
from voice.calls.kit import AsyncLedger, CallKit
from voice.calls.media import CallMedia
from voice.calls.session import CallSession, CallTable
from voice.ivr.inbound import InboundFlow
from voice.ivr.transfer import AgentTransfer

log = logging.getLogger(__name__)

Background = Callable[[Coroutine[Any, Any, None]], None]


class IvrCalls:
    """Runs the IVR on the calls a worker answers or places (`run`)."""

    def __init__(self, kit: CallKit, table: CallTable, background: Background, proxy: bool) -> None:
        cfg = kit.cfg
        self.kit, self.table, self.background, self.proxy = kit, table, background, proxy
        self.ledger = AsyncLedger(Ledger(kit.sessions, region=cfg.accounts.default_region))
        lockout = Lockout(
            cfg.ivr.verify_lockout_failures, dt.timedelta(minutes=cfg.ivr.verify_lockout_minutes)
        )
        self.verifications = Verifications(kit.sessions, lockout)

    async def run(self, session: CallSession) -> None:
        call, kit = session.call, self.kit
        outbound = call.identity.outbound
        media: CallMedia | None = None
        journal: CallLog | None = None
        flow_started = False
        try:
            journal = await kit.open_log(
                direction="outbound" if outbound else "inbound",
                caller=call.callee if outbound else call.caller,
                callee=call.caller if outbound else call.callee,
                sip_call_id=call.identity.sip_call_id,
            )
            media = kit.media(journal)
            self.table.journaled(session, journal, media)
            if not outbound:
                await journal.answered()
            else:
                self.background(self._note_answer(call, journal))
            await media.record(call)
            await media.listen(call)
            flow = InboundFlow(
                call,
                self.ledger,
                journal,
                kit.cfg.ivr,
                agent=self._transfer(call, journal, media),
                direction="outbound" if outbound else "inbound",
                verifier=self._verifier(call.callee if outbound else call.caller, journal),
                promises=CallPromises(kit.sessions, journal),
            )
            flow_started = True
            await flow.run()
            await journal.annotate()
        except Exception as exc:
            log.exception("call %s failed", call.identity.sip_call_id)
            await call.hangup()
            if journal is not None and not flow_started:  # the flow ends its own calls
                reason = f"error: {type(exc).__name__}"
                await journal.finish("failed", reason, f"Call failed before the menu: {reason}.")
        finally:
            # The last utterances out and stored, then the CRM is owed the whole transcript.
            if media is not None and await media.stop_listening() and session.log is not None:
                await session.log.transcript_done()

    def _verifier(self, customer: str | None, journal: CallLog) -> CallVerifier | None:
        cfg = self.kit.cfg
        if cfg.ivr.verify == "none":
            return None
        return CallVerifier(
            self.verifications, cfg.ivr.verify, customer, journal, cfg.accounts.default_region
        )

    def _transfer(self, call: Any, journal: CallLog, media: CallMedia) -> AgentTransfer:
        kit = self.kit
        agents = kit.cfg.agents

        async def directory(account: AccountSummary) -> list[Agent]:
            def find() -> list[Agent]:
                with kit.sessions() as session:
                    return agents_for(
                        session,
                        account.collector_id,
                        realm=kit.cfg.kamailio.realm,
                        proxy=self.proxy,
                        try_team=agents.try_team,
                        team_size=agents.team_size,
                    )

            return await retry_db(EVENT_TRIES, find)

        line = kit.line(journal, media, waiting=call)
        return AgentTransfer(agents, line, directory, journal, time.monotonic)

    async def _note_answer(self, call: Any, journal: CallLog) -> None:
        if await call.wait_answered():
            await journal.answered()
