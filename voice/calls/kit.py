"""What every call of one worker is made with (`CallKit`), and the IVR's ledger off the loop.

The worker builds one kit when it starts; a call's script gets its `CallLog`, `CallMedia` and
`CallLine` from it, so none of them needs the worker.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from accounts.call_journal import CallJournal
from accounts.idblocks import IdBlocks
from accounts.services import Ledger
from accounts.views import AccountSummary, Balance, InvoiceSummary, PaymentSummary
from accounts.write_behind import WriteBehind
from recordings.book import RecordingBook
from voice.calls.call import SipCall
from voice.calls.journal import CallLog
from voice.calls.line import CallLine, PlaceLeg
from voice.calls.media import CallMedia, Recorder
from voice.config import Config

READ_THREADS = 4  # a worker's ledger reads at once (a few calls pressing keys together)


class AsyncLedger:
    """The IVR's `Ledger` over the SQLAlchemy service, off the event loop, in its own threads.

    Not asyncio's default executor: every write of the worker runs there (accounts/retry.py)
    and waits in its thread up to the busy timeout while SQLite's lock is held elsewhere, so a
    few calls' writes filled it and a caller's balance waited behind them for a thread, though
    WAL lets the read go on under any writer (soak 2026-12-03: key -> answer 9.9 s mean;
    tests/unit/test_ledger_reads.py). The threads start with the first read, in the worker.
    """

    def __init__(self, ledger: Ledger, today: Callable[[], dt.date] = dt.date.today) -> None:
        self._ledger = ledger
        self._today = today
        self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="ledger-read")

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def accounts_for_phone(self, caller: str | None) -> list[AccountSummary]:
        return await self._read(self._ledger.accounts_for_phone, caller)

    async def account_by_number(self, number: str) -> AccountSummary | None:
        return await self._read(self._ledger.account_by_number, number)

    async def balance(self, account_id: int) -> Balance:
        return await self._read(self._ledger.balance, account_id, self._today())

    async def last_invoice(self, account_id: int) -> InvoiceSummary | None:
        return await self._read(self._ledger.last_invoice, account_id)

    async def last_payment(self, account_id: int) -> PaymentSummary | None:
        return await self._read(self._ledger.last_payment, account_id)


@dataclass
class CallKit:
    cfg: Config
    worker: str  # the worker's name, on every call row
    sessions: sessionmaker[Session]
    journal: CallJournal
    book: RecordingBook
    recorder: Recorder
    place: PlaceLeg  # a leg that runs no IVR (Worker.place_leg)
    metrics: collections.Counter[str]
    writes: WriteBehind | None = None  # the worker's write-behind: calls never wait on the db
    ids: IdBlocks | None = None  # ids reserved ahead: a call's first rows written behind too

    async def open_log(self, *, sip_call_id: str, **parties: Any) -> CallLog:
        """The call's row (direction, caller, callee) and the log of everything it writes.

        With an id reserved ahead the row is handed to the write-behind and the call starts
        at once; without one (none left, a database that cannot reserve) it is written now."""
        call_id = self.ids.take("calls") if self.ids is not None and self.writes else None
        if call_id is None:
            call_id = await CallLog.start(
                self.journal, sip_call_id=sip_call_id, worker=self.worker, **parties
            )
            return self.log(call_id)
        log = self.log(call_id)
        log.open(sip_call_id=sip_call_id, worker=self.worker, **parties)
        return log

    def log(self, call_id: int) -> CallLog:
        return CallLog(
            self.journal,
            call_id,
            sessions=self.sessions,
            book=self.book,
            metrics=self.metrics,
            writes=self.writes,
            # "after": every recording gets a job, which owes the CRM the transcript when it
            # lands; the live path's (the IVR's rendered rows) would be a first, partial one.
            owes_transcript=self.cfg.asr.transcribe != "after",
        )

    def media(self, log: CallLog) -> CallMedia:
        return CallMedia(self.recorder, log)

    def line(self, log: CallLog, media: CallMedia, waiting: SipCall | None = None) -> CallLine:
        return CallLine(
            self.place,
            log,
            media,
            voicemail_max_seconds=self.cfg.agents.voicemail_max_seconds,
            waiting=waiting,
        )
