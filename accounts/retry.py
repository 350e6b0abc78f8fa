"""Database writes a call makes, retried while the database refuses (SQLite's lock held past
its busy timeout on a saturated machine, a PostgreSQL restart): bookkeeping must never end a
customer's call.

Each write is timed for `/metrics` (voice/metrics.py) from the call's side: the wait, retries
included. The backlog gauge counts writes a call is waiting on now, and those among them that
the database has refused at least once ("retrying"); summed over live workers only. The
write-behind (accounts/write_behind.py) reports its own queue into the same gauge.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.exc import DBAPIError, OperationalError

T = TypeVar("T")
DB_ERRORS = (OperationalError, DBAPIError)
# A write a call (or a delivery) cannot do without: 8 tries, 15.75 s of retry_pause between
# them, ~20 s in all while the database refuses (a saturated SQLite, a PostgreSQL restart).
DB_TRIES = 8
DB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)  # s

WRITE_SECONDS = Histogram(
    "voice_db_write_seconds",
    "A call's database write, retries included, by outcome (ok, failed: given up).",
    ["outcome"],
    buckets=DB_BUCKETS,
)
WRITE_RETRIES = Counter("voice_db_write_retries", "Database writes tried again after a refusal.")
BACKLOG = Gauge(
    "voice_journal_backlog",
    "Call writes not done yet: waiting/retrying (a call awaits them; refused at least once), "
    "queued/spooled (written behind the call: in memory, on disk after a refusal).",
    ["state"],
    multiprocess_mode="livesum",
)
BATCH_SECONDS = Histogram(
    "voice_journal_batch_seconds",
    "One write-behind transaction of call writes (accounts/write_behind.py), by outcome.",
    ["outcome"],
    buckets=DB_BUCKETS,
)


def show_backlog(queued: int, spooled: int) -> None:
    """The write-behind's owed writes (accounts/write_behind.py): in memory waiting for its
    writer, and kept on disk since the database refused them."""
    BACKLOG.labels("queued").set(queued)
    BACKLOG.labels("spooled").set(spooled)


# Every series from the start, at 0: an alert on one that does not exist yet never fires.
for _outcome in ("ok", "failed"):
    WRITE_SECONDS.labels(_outcome)
for _outcome in ("written", "refused"):
    BATCH_SECONDS.labels(_outcome)
for _state in ("waiting", "retrying", "queued", "spooled"):
    BACKLOG.labels(_state)


async def retry_db(tries: int, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn` in a thread, retried with back-off while the database refuses; the last error out."""
    started, outcome, refused = time.monotonic(), "failed", False
    BACKLOG.labels("waiting").inc()
    try:
        for attempt in range(tries):
            try:
                result = await asyncio.to_thread(fn, *args, **kwargs)
            except DB_ERRORS:
                if attempt == tries - 1:
                    raise
                if not refused:
                    refused = True
                    BACKLOG.labels("retrying").inc()
                WRITE_RETRIES.inc()
                await asyncio.sleep(retry_pause(attempt))
            else:
                outcome = "ok"
                return result
        raise AssertionError("unreachable")
    finally:
        BACKLOG.labels("waiting").dec()
        if refused:
            BACKLOG.labels("retrying").dec()
        WRITE_SECONDS.labels(outcome).observe(time.monotonic() - started)


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """Seconds to wait after the `attempts`-th failure (1, 2, ...): doubling, capped."""
    return min(maximum, initial * 2.0 ** min(attempts - 1, 62))


def retry_pause(attempt: int) -> float:
    """Seconds before trying a refused database write again after try `attempt` (0, 1, ...):
    0.25 s doubling to 4 s, the schedule every call-side retry uses."""
    return backoff(attempt + 1, 0.25, 4.0)
