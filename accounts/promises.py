"""Promises to pay keyed by a caller in the IVR, stored as the `promise_to_pay` outcome of
their call, for the account's collector (it then shows on their follow-ups)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from accounts.models import Account, Call, utcnow
from accounts.outcomes import Marking, OutcomeError, account_zone, mark_outcome
from accounts.retry import DB_ERRORS, retry_db

log = logging.getLogger(__name__)
IVR_USER = "ivr"  # the outcome's author: the caller, by keypad
STORE_TRIES = 8  # ~20 s of retries: the caller is waiting for "recorded", so not forever


class CallPromises:
    """The IVR's `Promises` (voice/ivr/promise.py) for one call on its identified account."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        call_id: int,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._sessions = sessions
        self._call_id = call_id
        self._clock = clock

    async def today(self) -> dt.date:
        return await asyncio.to_thread(self._today)

    async def store(self, amount_cents: int, date: dt.date) -> bool:
        """True once stored; False (logged) when the database or the rules refused it."""
        try:
            await retry_db(STORE_TRIES, self._store, amount_cents, date)
        except (OutcomeError, *DB_ERRORS) as exc:
            log.error("call %d: promise to pay not stored: %s", self._call_id, exc)
            return False
        return True

    def _today(self) -> dt.date:
        with self._sessions() as session:
            call = session.get(Call, self._call_id)
            account = session.get(Account, call.account_id) if call and call.account_id else None
            zone = account_zone(account.timezone) if account else dt.UTC
        return self._clock().astimezone(zone).date()

    def _store(self, amount_cents: int, date: dt.date) -> None:
        marking = Marking(
            "promise_to_pay", amount_cents, date, text="keyed by the caller in the IVR"
        )
        with self._sessions.begin() as session:
            mark_outcome(session, self._call_id, marking, user=IVR_USER)
