"""A call's first rows behind the call (ids reserved ahead: accounts/idblocks.py): the call's
row and its recording's are handed to the write-behind like every other write, so a call
starts while SQLite's lock is held; a worker killed before they were written leaves them in
its spool, and the next one writes them and closes the call it will never finish."""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accounts.call_journal import CallJournal
from accounts.idblocks import IdBlocks
from accounts.models import Call, CallEvent, Recording
from accounts.write_behind import WriteBehind
from recordings.book import RecordingBook
from tests.unit.test_write_behind import running
from voice.calls.journal import CallLog
from voice.calls.media import CallMedia, Recorder
from voice.config import from_mapping

PARTIES = {"direction": "inbound", "caller": "+12125550101", "callee": "ivr", "worker": "w0"}


def world(
    sessions: sessionmaker[Session], tmp_path: Path, wb: WriteBehind
) -> tuple[IdBlocks, Recorder]:
    ids = IdBlocks(sessions)
    book = RecordingBook(sessions, from_mapping({"data": {"dir": str(tmp_path)}}))
    recorder = Recorder(engine=None, book=book, metrics=collections.Counter(), ids=ids, writes=wb)  # type: ignore[arg-type]
    return ids, recorder


def tone(wav: Path, seconds: float = 2.0) -> None:
    samples = (3000 * np.sin(np.arange(int(16000 * seconds)) * 0.17)).astype(np.int16)
    soundfile.write(wav, samples, 16000, subtype="PCM_16")


async def test_a_call_and_its_recording_start_while_the_database_is_locked(
    locked_sqlite: tuple[sessionmaker[Session], sqlite3.Connection], tmp_path: Path
) -> None:
    sessions, holder = locked_sqlite
    wb = WriteBehind(sessions, tmp_path / "spool" / "w0.jsonl")
    ids, recorder = world(sessions, tmp_path, wb)
    await ids.refill()
    async with running(wb):
        holder.execute("BEGIN EXCLUSIVE")
        started = time.perf_counter()
        call_id = ids.take("calls")
        assert call_id is not None
        log = CallLog(CallJournal(sessions), call_id, sessions=sessions, writes=wb)
        log.open(sip_call_id="locked-1", **PARTIES)
        media = CallMedia(recorder, log)
        recording_id, wav = await media.open_row("call", 1)
        await log.answered()
        await log.event("prompt", {"name": "greeting"})
        took = time.perf_counter() - started
        assert took < 0.2, took  # nothing waited for the lock
        tone(wav)
        # The recording's close waits for its row, then finalises it: not "no recording".
        closing = asyncio.create_task(recorder.close(recording_id, lambda: None, 2.0))
        await asyncio.sleep(0.5)
        assert not closing.done()
        holder.execute("COMMIT")
        await asyncio.wait_for(closing, 20)
        await log.finish("completed", "caller hung up", "greeting only")
        assert await wb.flush(15)
    with sessions() as session:
        call = session.get(Call, call_id)
        assert call is not None and call.status == "completed" and call.sip_call_id == "locked-1"
        rec = session.get(Recording, recording_id)
        assert rec is not None and rec.status == "final" and rec.sha256 and not rec.loss, rec
    assert recorder.metrics["recordings_total"] == 1
    assert not recorder.metrics["recordings_failed_total"]


async def test_a_write_the_call_waits_for_waits_only_for_its_own_rows(
    db_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # `flushed()` (before an outcome, a verification try) waits for this call's writes, not for
    # a queue other calls keep filling.
    wb = WriteBehind(db_sessions, tmp_path / "w0.jsonl")
    journal = CallJournal(db_sessions)
    ids, _ = world(db_sessions, tmp_path, wb)
    await ids.refill()
    call_id = ids.take("calls")
    assert call_id is not None
    log = CallLog(journal, call_id, sessions=db_sessions, writes=wb)
    log.open(sip_call_id="mine", **PARTIES)
    await log.event("prompt", {})
    mine = log.last
    later = [wb.submit("add_event", call_id, kind="later", detail={"n": n}) for n in range(3)]
    assert mine < min(later)
    assert not await wb.through(mine, 0.05)  # no writer yet: not written
    async with running(wb):
        assert await wb.through(mine, 10)
        await log.flushed()
        with db_sessions() as session:
            assert session.get(Call, call_id) is not None
        assert await wb.flush(10)


async def test_rows_left_in_a_dead_worker_s_spool_are_written_and_their_call_closed(
    locked_sqlite: tuple[sessionmaker[Session], sqlite3.Connection], tmp_path: Path
) -> None:
    sessions, holder = locked_sqlite
    spool = tmp_path / "spool" / "w0.jsonl"
    first = WriteBehind(sessions, spool)
    ids, recorder = world(sessions, tmp_path, first)
    await ids.refill()
    task = asyncio.create_task(first.run())
    holder.execute("BEGIN EXCLUSIVE")
    call_id = ids.take("calls")
    assert call_id is not None
    log = CallLog(CallJournal(sessions), call_id, sessions=sessions, writes=first)
    log.open(sip_call_id="killed", **PARTIES)
    recording_id, wav = await CallMedia(recorder, log).open_row("call", 1)
    await log.event("choice", {"key": "1", "option": "balance"})
    tone(wav, 3.0)  # what the recorder wrote before the kill
    assert not await first.flush(0.5)
    task.cancel()  # killed: the rows are in its spool only, unknown to the supervisor
    with pytest.raises(asyncio.CancelledError):
        await task
    holder.execute("COMMIT")

    closed: list[list[int]] = []
    journal, book = CallJournal(sessions), recorder.book

    async def close_replayed(call_ids: list[int]) -> None:  # as voice/calls/worker.py's
        closed.append(journal.interrupt_calls("w0", "worker stopped", call_ids))
        book.repair_calls(call_ids)

    second = WriteBehind(sessions, spool, on_replayed=close_replayed)
    assert second.replayed_calls == {call_id}
    async with running(second):
        assert await second.flush(10)
        for _ in range(100):
            if closed:
                break
            await asyncio.sleep(0.05)
    assert closed == [[call_id]]
    with sessions() as session:
        call = session.get(Call, call_id)
        assert call is not None and call.status == "interrupted", call
        assert "balance" in (call.summary or "")
        kinds = session.scalars(select(CallEvent.kind).where(CallEvent.call_id == call_id))
        assert list(kinds) == ["choice"]
        rec = session.get(Recording, recording_id)
        assert rec is not None and rec.status == "interrupted" and rec.sha256, rec
        assert abs((rec.duration_s or 0) - 3.0) < 0.1


class _GoneEngine:
    """The caller hung up before the recorder could start."""

    async def start_recording(self, key: int, path: str) -> bool:
        return False


async def test_a_recording_that_cannot_be_closed_does_not_strand_its_call(
    db_sessions: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its close met a locked database for all its tries: raised out of `record`, it skipped
    # the IVR flow and its note, and the call stayed "in progress" for good (soak call 7305).
    from sqlalchemy.exc import OperationalError

    import voice.calls.media as media_module

    book = RecordingBook(db_sessions, from_mapping({"data": {"dir": str(tmp_path)}}))

    def refused(recording_id: int, **_: object) -> None:
        raise OperationalError("UPDATE recordings", {}, Exception("database is locked"))

    monkeypatch.setattr(book, "close", refused)
    monkeypatch.setattr(media_module, "DB_TRIES", 1)
    recorder = Recorder(engine=_GoneEngine(), book=book, metrics=collections.Counter())  # type: ignore[arg-type]
    call_id = CallJournal(db_sessions).start_call(sip_call_id="gone", **PARTIES)
    media = CallMedia(recorder, CallLog(CallJournal(db_sessions), call_id, sessions=db_sessions))

    class Call:
        key = 7

    await media.record(Call())  # type: ignore[arg-type]
    assert media.recording is None
    with db_sessions() as session:
        assert session.scalar(select(Recording.status).where(Recording.call_id == call_id)) == (
            "recording"  # left for start-up's repair
        )
