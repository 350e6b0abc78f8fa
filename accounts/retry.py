"""Database writes a call makes, retried while the database refuses (SQLite's lock held past
its busy timeout on a saturated machine, a PostgreSQL restart): bookkeeping must never end a
customer's call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

T = TypeVar("T")
DB_ERRORS = (OperationalError, DBAPIError)


async def retry_db(tries: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn` in a thread, retried with back-off while the database refuses; the last error out."""
    for attempt in range(tries):
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except DB_ERRORS:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(min(0.25 * 2**attempt, 4.0))
    raise AssertionError("unreachable")
