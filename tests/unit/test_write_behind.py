"""A call's writes behind the call (accounts/write_behind.py), on real SQLite and PostgreSQL.

The database is made to refuse for real: another connection holds SQLite's write lock
(BEGIN EXCLUSIVE) past a short busy timeout, as a saturated machine does.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from accounts.call_journal import CallJournal
from accounts.demo import load_demo_if_empty
from accounts.models import (
    Account,
    Call,
    CallEvent,
    Note,
    OutboundAttempt,
    Transcript,
    WrittenBatch,
)
from accounts.write_behind import WriteBehind, read_spool


def new_call(sessions: sessionmaker[Session], sip: str = "c1") -> int:
    return CallJournal(sessions).start_call(
        direction="inbound", caller="+12125550101", callee="ivr", worker="w0", sip_call_id=sip
    )


def events(sessions: sessionmaker[Session], call_id: int) -> list[tuple[int, str, dict]]:
    with sessions() as session:
        rows = session.execute(
            select(CallEvent.seq, CallEvent.kind, CallEvent.detail)
            .where(CallEvent.call_id == call_id)
            .order_by(CallEvent.seq)
        ).all()
        return [tuple(r) for r in rows]  # type: ignore[misc]


@contextlib.asynccontextmanager
async def running(wb: WriteBehind) -> AsyncIterator[WriteBehind]:
    """`wb`'s writer task for the block, cancelled after it (as a worker's end does)."""
    task = asyncio.create_task(wb.run())
    try:
        yield wb
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
async def writer(db_sessions: sessionmaker[Session], tmp_path: Path) -> AsyncIterator[WriteBehind]:
    async with running(WriteBehind(db_sessions, tmp_path / "spool" / "w0.jsonl")) as wb:
        yield wb


async def test_writes_land_in_order_with_the_time_they_were_made(
    db_sessions: sessionmaker[Session], writer: WriteBehind
) -> None:
    call_id = new_call(db_sessions)
    before = dt.datetime.now(dt.UTC)
    writer.submit("answered", call_id)
    for n in range(50):
        writer.submit("add_event", call_id, kind="key", detail={"n": n})
    writer.submit("finish_call", call_id, status="completed", end_reason="hung up", summary="s")
    assert writer.pending == 52
    assert await writer.flush(10)
    got = events(db_sessions, call_id)
    assert [d["n"] for _, _, d in got] == list(range(50))
    assert [s for s, _, _ in got] == list(range(1, 51))
    with db_sessions() as session:
        call = session.get(Call, call_id)
        assert call is not None and call.status == "completed"
        assert call.answered_at is not None and call.answered_at >= before - dt.timedelta(seconds=1)
        # One batch: one id recorded.
        assert session.scalar(select(func.count()).select_from(WrittenBatch)) == 1
    assert writer.pending == 0 and writer.oldest_age() == 0.0
    assert not writer.spool.exists()


async def test_a_rejected_write_is_dropped_and_the_others_land(
    db_sessions: sessionmaker[Session], writer: WriteBehind
) -> None:
    call_id = new_call(db_sessions)
    writer.submit("add_event", call_id, kind="a", detail={})
    writer.submit("add_event", 999_999, kind="ghost", detail={})  # no such call
    writer.submit("add_event", call_id, kind="b", detail={})
    assert await writer.flush(10)
    assert [k for _, k, _ in events(db_sessions, call_id)] == ["a", "b"]
    assert writer.stats.dropped == 1 and writer.stats.written == 2


def test_a_write_that_cannot_be_kept_is_refused_at_once(tmp_path: Path) -> None:
    wb = WriteBehind(None, tmp_path / "w0.jsonl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a call write"):
        wb.submit("drop_table", 1)
    with pytest.raises(TypeError):
        wb.submit("add_event", 1, kind="k", detail={"when": dt.datetime.now()})
    assert wb.pending == 0


# -- the database refuses (SQLite's write lock held by another process) -------------------------


async def test_a_locked_database_never_makes_the_call_wait_and_loses_nothing(
    locked_sqlite: tuple[sessionmaker[Session], sqlite3.Connection], tmp_path: Path
) -> None:
    sessions, holder = locked_sqlite
    call_id = new_call(sessions)
    spool = tmp_path / "spool" / "w0.jsonl"
    wb = WriteBehind(sessions, spool)
    async with running(wb):
        holder.execute("BEGIN EXCLUSIVE")
        started = time.perf_counter()
        for n in range(20):
            wb.submit("add_event", call_id, kind="key", detail={"n": n})
        submit_s = time.perf_counter() - started
        assert not await wb.flush(1.0)  # the database refuses for now
        # The call did not wait (20 submits; the lock has been held a second already) ...
        assert submit_s < 0.05, submit_s
        # ... and what it owes is on disk, fsynced, before any retry.
        kept = [w for b in read_spool(spool) for w in b.writes]
        assert [w["kwargs"]["detail"]["n"] for w in kept] == list(range(20))
        assert wb.stats.refusals >= 2 and wb.spooled == 20
        assert wb.oldest_age() >= 1.0
        holder.execute("COMMIT")
        assert await wb.flush(15)
    assert [d["n"] for _, _, d in events(sessions, call_id)] == list(range(20))
    assert not spool.exists() and wb.pending == 0


async def test_a_killed_worker_s_spool_is_written_by_the_next_once(
    locked_sqlite: tuple[sessionmaker[Session], sqlite3.Connection], tmp_path: Path
) -> None:
    sessions, holder = locked_sqlite
    call_id = new_call(sessions)
    spool = tmp_path / "spool" / "w0.jsonl"
    first = WriteBehind(sessions, spool)
    task = asyncio.create_task(first.run())
    holder.execute("BEGIN EXCLUSIVE")
    first.submit("add_event", call_id, kind="before", detail={})
    first.submit("finish_call", call_id, status="completed", end_reason="hung up", summary="s")
    assert not await first.flush(0.5)
    task.cancel()  # the worker dies; what it owed is in its spool only
    with pytest.raises(asyncio.CancelledError):
        await task
    holder.execute("COMMIT")
    assert spool.exists()
    # A crash mid-append leaves half a line: skipped, the whole batches still written.
    with spool.open("a") as out:
        out.write('{"id": "cut", "writes": [{"wri')

    second = WriteBehind(sessions, spool)
    assert second.stats.replayed == 2
    async with running(second):
        assert await second.flush(10)
    assert [k for _, k, _ in events(sessions, call_id)] == ["before"]
    with sessions() as session:
        assert session.get(Call, call_id).status == "completed"  # type: ignore[union-attr]
    assert not spool.exists()


async def test_a_batch_replayed_after_its_commit_is_not_written_twice(
    db_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # Killed between the commit and the spool clean-up: the spool still holds a batch that
    # is already in the database.
    call_id = new_call(db_sessions)
    spool = tmp_path / "w0.jsonl"
    wb = WriteBehind(db_sessions, spool)
    wb.submit("add_event", call_id, kind="once", detail={})
    wb.keep_the_rest()  # spooled as at shutdown
    line = spool.read_text()
    async with running(wb):
        assert await wb.flush(10)
    spool.write_text(line)
    again = WriteBehind(db_sessions, spool)
    async with running(again):
        assert await again.flush(10)
    assert [k for _, k, _ in events(db_sessions, call_id)] == ["once"]


def _lookups(sessions: sessionmaker[Session]) -> list[str]:
    """The SELECTs on written_batches the writer runs from now on (appended as they run)."""
    seen: list[str] = []

    def watch(conn, cursor, statement, params, context, executemany) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("SELECT") and "written_batches" in statement:
            seen.append(statement)

    sa_event.listen(sessions.kw["bind"], "before_cursor_execute", watch)
    return seen


async def test_a_fresh_batch_is_written_without_looking_its_id_up(
    db_sessions: sessionmaker[Session], writer: WriteBehind
) -> None:
    # Never tried, never spooled: it cannot be in the database yet, so no lookup (that
    # SELECT was 40 % of a loaded worker's GIL time).
    call_id = new_call(db_sessions)
    lookups = _lookups(db_sessions)
    for n in range(3):
        writer.submit("add_event", call_id, kind="k", detail={"n": n})
        assert await writer.flush(10)
    assert len(events(db_sessions, call_id)) == 3
    assert lookups == []


async def test_a_commit_that_landed_but_was_reported_failed_is_not_written_twice(
    db_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # PostgreSQL can drop the connection after COMMIT reached it: the writer sees a transient
    # error for a batch that is in. Its retry must find the batch's id and write nothing.
    call_id = new_call(db_sessions)
    lookups = _lookups(db_sessions)
    failed: list[bool] = []

    def lost_ack(session: Session) -> None:
        if not failed:
            failed.append(True)
            raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    sa_event.listen(Session, "after_commit", lost_ack)
    try:
        async with running(WriteBehind(db_sessions, tmp_path / "w0.jsonl")) as wb:
            wb.submit("add_event", call_id, kind="once", detail={})
            assert await wb.flush(10)
            assert wb.stats.refusals == 1
    finally:
        sa_event.remove(Session, "after_commit", lost_ack)
    assert [k for _, k, _ in events(db_sessions, call_id)] == ["once"]
    assert len(lookups) == 1


async def test_a_call_log_with_the_write_behind_goes_on_while_the_database_is_locked(
    locked_sqlite: tuple[sessionmaker[Session], sqlite3.Connection], tmp_path: Path
) -> None:
    # The call's side (voice/calls/journal.CallLog) as a worker builds it: each await returns
    # at once with SQLite's lock held, and everything lands, in order, once it is released.
    from voice.asr.live import Segment
    from voice.calls.journal import CallLog

    sessions, holder = locked_sqlite
    journal = CallJournal(sessions)
    call_id = new_call(sessions)
    load_demo_if_empty(sessions)
    with sessions.begin() as session:  # a Make a Call reservation, as the API makes it
        account_id = session.scalar(select(Account.id).where(Account.number == "10042"))
        attempt = OutboundAttempt(account_id=account_id, destination="+12125550101", source="t")
        session.add(attempt)
        session.flush()
        attempt_id = attempt.id
    wb = WriteBehind(sessions, tmp_path / "spool" / "w0.jsonl")
    async with running(wb):
        call = CallLog(journal, call_id, sessions=sessions, writes=wb)
        holder.execute("BEGIN EXCLUSIVE")
        started = time.perf_counter()
        await call.attach_attempt(attempt_id)  # it waited past the API's 10 s: a 500
        await call.answered()
        # A voicemail's note: written directly, it gave up after ~20 s and failed the call.
        assert (
            await call.add_note(account_id, "voicemail", "voicemail", "Voicemail for Dana") is None
        )
        for n in range(10):
            await call.event("choice", {"key": str(n % 4), "option": "balance"})
        word = {"word": "잔액", "start": 1.0, "end": 1.6, "conf": 0.9}
        call.store_soon(None, Segment("caller", 1.0, 1.6, "잔액", 0.9, (word,)))
        await call.finish("completed", "caller hung up", "no account reached")
        await call.transcript_done()
        took = time.perf_counter() - started
        assert took < 0.1, took  # the lock is held all along: nothing here waited for it
        assert not await wb.flush(0.5)
        holder.execute("COMMIT")
        assert await wb.flush(15)
    assert [d["key"] for _, _, d in events(sessions, call_id)] == [str(n % 4) for n in range(10)]
    with sessions() as session:
        row = session.get(Call, call_id)
        assert row is not None and row.status == "completed" and row.answered_at is not None
        assert row.end_reason == "caller hung up"
        assert row.account_id == account_id
        assert session.get(OutboundAttempt, attempt_id).call_id == call_id  # type: ignore[union-attr]
        notes = session.execute(select(Note.kind, Note.body).where(Note.call_id == call_id)).all()
        assert ("voicemail", "Voicemail for Dana") in [tuple(n) for n in notes]
    with sessions() as session:
        said = session.scalars(select(Transcript.text).where(Transcript.call_id == call_id))
        assert list(said) == ["잔액"]
