"""Ids reserved ahead (accounts/idblocks.py), on real SQLite and PostgreSQL: no other insert
takes a reserved id, a database that cannot reserve says so, and the call's first rows then
go behind it (voice/calls/kit.py `CallKit.open_log`)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accounts.call_journal import CallJournal
from accounts.db import create_schema, make_engine, make_sessions
from accounts.idblocks import BLOCK, IdBlocks, reserve
from accounts.models import Call, Recording, utcnow
from recordings.book import RecordingBook
from voice.config import from_mapping


def plain_call(sessions: sessionmaker[Session], sip: str) -> int:
    return CallJournal(sessions).start_call(
        direction="inbound", caller="+12125550101", callee="ivr", worker="api", sip_call_id=sip
    )


async def test_reserved_ids_are_never_taken_by_another_insert(
    db_sessions: sessionmaker[Session],
) -> None:
    before = plain_call(db_sessions, "before")
    ids = IdBlocks(db_sessions)
    await ids.refill()
    reserved = [ids.take("calls") for _ in range(BLOCK)]
    assert None not in reserved and len(set(reserved)) == BLOCK
    assert min(reserved) > before  # type: ignore[type-var]
    # Other inserts (the API, another worker) go past the block, not into it.
    others = [plain_call(db_sessions, f"other{n}") for n in range(3)]
    assert not set(others) & set(reserved)
    # A reserved id makes its row when the write-behind hands it over, in any order.
    journal = CallJournal(db_sessions)
    for call_id in reversed(reserved):
        assert call_id is not None
        journal.open_call(
            call_id, at=utcnow(), direction="inbound", caller=None,
            callee="ivr", worker="w0", sip_call_id=f"r{call_id}",
        )  # fmt: skip
    with db_sessions() as session:
        got = set(session.scalars(select(Call.id).where(Call.sip_call_id.like("r%"))))
    assert got == set(reserved)
    assert ids.take("recordings") is not None  # every table has its block


async def test_the_next_block_is_reserved_before_the_last_is_used(
    db_sessions: sessionmaker[Session],
) -> None:
    ids = IdBlocks(db_sessions)
    await ids.refill()
    taken = [ids.take("calls") for _ in range(BLOCK - 3)]  # below LOW: a refill starts
    assert ids._refill is not None
    await ids._refill
    assert ids.left("calls") >= BLOCK - 1
    more = [ids.take("calls") for _ in range(ids.left("calls"))]
    assert len(set(taken + more)) == len(taken) + len(more)


async def test_a_row_that_must_go_behind_waits_for_the_refill_not_the_lock(
    locked_sqlite: tuple[sessionmaker[Session], sqlite3.Connection],
) -> None:
    # A recording behind its call's row: with no id left it waits for a refill (which meets
    # the lock, is refused, and is tried again), rather than writing its row before the call's.
    sessions, holder = locked_sqlite
    ids = IdBlocks(sessions)
    holder.execute("BEGIN EXCLUSIVE")
    assert await ids.take_waiting("recordings", tries=2) is None  # locked throughout
    loop = asyncio.get_running_loop()
    loop.call_later(0.3, holder.execute, "ROLLBACK")
    got = await ids.take_waiting("recordings", tries=20)
    assert got is not None and ids.left("recordings") == BLOCK - 1


def test_a_sqlite_file_made_before_autoincrement_reserves_nothing(tmp_path: Path) -> None:
    # Ids there are max(id) + 1: a reserved one would be the next insert's.
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE calls (id INTEGER NOT NULL PRIMARY KEY, direction TEXT)")
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert reserve(conn, "calls", 4) == []
    with engine.connect() as conn, pytest.raises(ValueError):
        reserve(conn, "calls; DROP TABLE calls", 4)  # only our tables' names reach SQL
    engine.dispose()


async def test_a_database_that_cannot_reserve_leaves_calls_writing_their_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    with engine.begin() as conn:  # as a file made before: tables without AUTOINCREMENT
        for table in ("recordings", "calls"):
            conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO old_{table}")
        conn.exec_driver_sql("CREATE TABLE calls (id INTEGER NOT NULL PRIMARY KEY)")
        conn.exec_driver_sql("CREATE TABLE recordings (id INTEGER NOT NULL PRIMARY KEY)")
    ids = IdBlocks(make_sessions(engine))
    await ids.refill()
    assert not ids.supported and ids.take("calls") is None
    ids.refill_soon()
    assert ids._refill is None  # no more tries: every call writes its rows the old way
    engine.dispose()


async def test_a_locked_database_reserves_later_without_raising(tmp_path: Path) -> None:
    path = tmp_path / "voice.db"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=50)
    create_schema(engine)
    holder = sqlite3.connect(path, isolation_level=None, timeout=5)
    ids = IdBlocks(make_sessions(engine))
    try:
        holder.execute("BEGIN EXCLUSIVE")
        await ids.refill()
        assert ids.supported and ids.take("calls") is None  # none now: the old way
        holder.execute("COMMIT")
        await ids.refill()
        assert ids.take("recordings") is not None
    finally:
        holder.close()
        engine.dispose()


def test_recording_rows_planned_ahead_land_where_the_book_would_put_them(
    db_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    cfg = from_mapping({"data": {"dir": str(tmp_path)}})
    book = RecordingBook(db_sessions, cfg)
    call_id = plain_call(db_sessions, "c")
    at = utcnow()
    row, wav = book.plan(call_id, 77, at, kind="voicemail", channels=1)
    assert wav.parent.is_dir() and wav.name == f"call-{call_id}-rec-77.wav"
    CallJournal(db_sessions).open_recording(call_id, at=at, **row)
    with db_sessions() as session:
        rec = session.get(Recording, 77)
        assert rec is not None and rec.status == "recording" and rec.kind == "voicemail"
        assert rec.retain_until is not None and rec.retain_until > at
    opened_id, opened_wav = book.open(call_id, at, kind="voicemail")
    assert opened_wav.parent == wav.parent and opened_id != 77
