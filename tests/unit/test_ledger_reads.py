"""The IVR's ledger reads do not queue behind writes that wait for SQLite's lock.

Every database call of a worker ran in asyncio's default executor (min(32, cores + 4) threads:
6 here). A write waits in its thread up to the busy timeout (5 s by default) while another
process holds SQLite's write lock, so a few calls' writes at once filled the pool, and a caller
who pressed 1 waited for a thread before the balance could be read, though WAL lets a reader
go on under any writer (soak, 2026-12-03: key -> answer 9.9 s on average). Real SQLite, a real
lock held by another connection.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path

from sqlalchemy import text

from accounts.db import create_schema, make_engine, make_sessions
from accounts.demo import load_demo_if_empty
from accounts.retry import retry_db
from accounts.services import Ledger
from voice.calls.kit import AsyncLedger

WRITES = 12  # more than the default executor's threads on any machine up to 8 cores


def test_a_balance_is_read_while_writes_wait_for_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "voice.db"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=4000)
    create_schema(engine)
    sessions = make_sessions(engine)
    load_demo_if_empty(sessions)
    ledger = Ledger(sessions)
    [account] = ledger.accounts_for_phone("+12125550101")
    reads = AsyncLedger(ledger)

    def write() -> None:
        with sessions.begin() as session:  # waits up to the busy timeout for the lock
            session.execute(text("UPDATE accounts SET currency = currency"))

    async def scene() -> tuple[int, int]:
        writes = [asyncio.create_task(retry_db(1, write)) for _ in range(WRITES)]
        await asyncio.sleep(0.3)  # every write is in a thread, waiting for the lock
        balance = await reads.balance(account.id)
        done_before = sum(w.done() for w in writes)
        holder.execute("COMMIT")
        await asyncio.gather(*writes, return_exceptions=True)
        return balance.open_cents, done_before

    holder = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # readers go on (WAL); no write can
        open_cents, done_before = asyncio.run(scene())
    finally:
        holder.close()
        engine.dispose()
    assert open_cents == ledger.balance(account.id, dt.date.today()).open_cents > 0
    assert done_before == 0  # read while every write still waited: not queued behind them
