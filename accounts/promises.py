"""Promises to pay keyed by a caller in the IVR, stored as the `promise_to_pay` outcome of
their call, for the account's collector (it then shows on their follow-ups)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from accounts.models import Account, Call, utcnow
from accounts.outcomes import Marking, OutcomeError, account_zone
from accounts.retry import DB_ERRORS

log = logging.getLogger(__name__)
IVR_USER = "ivr"  # the outcome's author: the caller, by keypad
STORE_TRIES = 8  # ~20 s of retries: the caller is waiting for "recorded", so not forever


class OutcomeLog(Protocol):
    """The call's CallLog (voice/calls/journal.py), which owns every write a call makes, with
    their retries (named by shape: accounts/ imports no voice module)."""

    @property
    def call_id(self) -> int: ...

    async def flushed(self) -> None:
        """The call's writes handed to the write-behind so far are in (its account too)."""
        ...

    async def mark_outcome(self, marking: Marking, user: str, *, tries: int) -> int: ...


class CallPromises:
    """The IVR's `Promises` (voice/ivr/promise.py) for one call on its identified account."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        journal: OutcomeLog,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._journal = journal
        self._clock = clock

    async def today(self) -> dt.date:
        await self._journal.flushed()  # the call's account, set behind the call, decides the zone
        return await asyncio.to_thread(self._today)

    async def store(self, amount_cents: int, date: dt.date) -> bool:
        """True once stored; False (logged) when the database or the rules refused it.

        Written through the call's log and waited for, never only queued: the caller is told
        whether it was recorded, and the rules (accounts/outcomes.py) may refuse it."""
        marking = Marking(
            "promise_to_pay", amount_cents, date, text="keyed by the caller in the IVR"
        )
        try:
            await self._journal.mark_outcome(marking, IVR_USER, tries=STORE_TRIES)
        except (OutcomeError, *DB_ERRORS) as exc:
            log.error("call %d: promise to pay not stored: %s", self._journal.call_id, exc)
            return False
        return True

    def _today(self) -> dt.date:
        with self._sessions() as session:
            call = session.get(Call, self._journal.call_id)
            account = session.get(Account, call.account_id) if call and call.account_id else None
            zone = account_zone(account.timezone) if account else dt.UTC
        return self._clock().astimezone(zone).date()
