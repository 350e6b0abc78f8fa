"""A call worker: one pjsua2 Endpoint (at most 4 calls) running the IVR for each call it answers.

Run by the supervisor (`voice serve`) as its own process, so a crash takes only its own calls.
Database work runs in threads (`asyncio.to_thread`); pjsua2 work runs on the engine's owner thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
from collections.abc import Callable
from typing import Any

from accounts.db import create_schema, make_engine, make_sessions
from accounts.services import CallJournal, Ledger
from accounts.views import AccountSummary, Balance, InvoiceSummary, PaymentSummary
from voice.config import Config
from voice.ivr.clips import ClipLibrary
from voice.ivr.inbound import InboundFlow
from voice.sip.call import SipCall
from voice.sip.engine import CallIdentity, Events, SipEngine

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 30.0  # seconds calls in progress may take to finish on shutdown


class AsyncLedger:
    """The IVR's `Ledger` over the SQLAlchemy service, off the event loop."""

    def __init__(self, ledger: Ledger, today: Callable[[], dt.date] = dt.date.today) -> None:
        self._ledger = ledger
        self._today = today

    async def accounts_for_phone(self, caller: str | None) -> list[AccountSummary]:
        return await asyncio.to_thread(self._ledger.accounts_for_phone, caller)

    async def account_by_number(self, number: str) -> AccountSummary | None:
        return await asyncio.to_thread(self._ledger.account_by_number, number)

    async def balance(self, account_id: int) -> Balance:
        return await asyncio.to_thread(self._ledger.balance, account_id, self._today())

    async def last_invoice(self, account_id: int) -> InvoiceSummary | None:
        return await asyncio.to_thread(self._ledger.last_invoice, account_id)

    async def last_payment(self, account_id: int) -> PaymentSummary | None:
        return await asyncio.to_thread(self._ledger.last_payment, account_id)


class CallLog:
    """The IVR's `Journal` for one call: call events and the closing note, in the database."""

    def __init__(self, journal: CallJournal, call_id: int) -> None:
        self._journal = journal
        self.call_id = call_id

    async def event(self, kind: str, detail: dict[str, Any]) -> None:
        await asyncio.to_thread(self._journal.add_event, self.call_id, kind, detail)

    async def identified(self, account: AccountSummary, how: str) -> None:
        await asyncio.to_thread(self._journal.set_account, self.call_id, account.id)
        await self.event("identified", {"account": account.number, "how": how})

    async def finish(self, status: str, end_reason: str, summary: str) -> None:
        await asyncio.to_thread(
            self._journal.finish_call,
            self.call_id,
            status=status,
            end_reason=end_reason,
            summary=summary,
        )


class Worker(Events):
    def __init__(self, cfg: Config, name: str) -> None:
        self.cfg = cfg
        self.name = name
        db = make_engine(cfg.database_url, cfg.database.busy_timeout_ms)
        create_schema(db)
        sessions = make_sessions(db)
        self.ledger = AsyncLedger(Ledger(sessions, region=cfg.accounts.default_region))
        self.journal = CallJournal(sessions)
        self.clips = ClipLibrary(
            cfg.tts, cfg.data_dir / "cache" / "tts", cfg.prompts_dir, cfg.ivr.company_name
        )
        self.calls: dict[int, SipCall] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.engine: SipEngine | None = None

    async def serve(self, stop: asyncio.Event) -> None:
        fresh = await asyncio.to_thread(self.clips.prewarm)
        log.info(
            "worker %s: %d prompt clips rendered, SIP on %s:%d",
            self.name,
            fresh,
            self.cfg.sip.bind,
            self.cfg.sip.port,
        )
        self.engine = SipEngine(self.cfg.sip, asyncio.get_running_loop(), self)
        self.engine.start()
        try:
            await stop.wait()
            await self.drain(DRAIN_TIMEOUT)
        finally:
            await asyncio.to_thread(self.engine.stop)

    async def drain(self, timeout: float) -> None:
        """Stop taking calls, let calls in progress finish, then hang up what is left."""
        assert self.engine is not None
        self.engine.draining = True
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
            for call in list(self.calls.values()):
                await call.hangup()
            if pending:
                await asyncio.wait(pending, timeout=5.0)

    # -- Events (on the loop) -----------------------------------------------------------------

    def incoming(self, identity: CallIdentity) -> None:
        assert self.engine is not None
        call = SipCall(self.engine, identity, self.clips.render)
        self.calls[identity.key] = call
        task = asyncio.create_task(self._run_call(call), name=f"call-{identity.key}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def confirmed(self, key: int) -> None:
        if call := self.calls.get(key):
            call.on_confirmed()

    def digit(self, key: int, digit: str) -> None:
        if call := self.calls.get(key):
            call.on_digit(digit)

    def disconnected(self, key: int, code: int, reason: str) -> None:
        if call := self.calls.pop(key, None):
            call.on_disconnected(code, reason)

    def refused(self, identity: CallIdentity, code: int, reason: str) -> None:
        log.warning(
            "refused call %s from %s: %d %s",
            identity.sip_call_id,
            identity.remote_uri,
            code,
            reason,
        )

    async def _run_call(self, call: SipCall) -> None:
        try:
            call_id = await asyncio.to_thread(
                self.journal.start_call,
                direction="inbound",
                caller=call.caller,
                callee=call.callee,
                worker=self.name,
                sip_call_id=call.identity.sip_call_id,
            )
            await asyncio.to_thread(self.journal.answered, call_id)
            flow = InboundFlow(call, self.ledger, CallLog(self.journal, call_id), self.cfg.ivr)
            await flow.run()
        except Exception:
            log.exception("call %s failed", call.identity.sip_call_id)
            await call.hangup()


def run(cfg: Config, name: str = "w0") -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Worker(cfg, name).serve(stop)

    asyncio.run(main())
