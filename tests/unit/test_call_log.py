"""Bookkeeping never ends a call: journal writes are retried, and a lost event is skipped."""

from __future__ import annotations

import collections
import sqlite3
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from accounts.retry import DB_TRIES
from voice.calls import journal as call_journal
from voice.calls.journal import CallLog
from voice.calls.media import Recorder


class LockedJournal:
    """Refuses the first `failures` writes the way SQLite does when its lock is held too long."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.events: list[tuple[int, str]] = []
        self.finished: list[tuple[int, str]] = []

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))

    def add_event(self, call_id: int, kind: str, detail: dict[str, Any]) -> None:
        self._maybe_fail()
        self.events.append((call_id, kind))

    def finish_call(self, call_id: int, *, status: str, end_reason: str, summary: str) -> None:
        self._maybe_fail()
        self.finished.append((call_id, status))


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    async def instant(_seconds: float) -> None:
        return None

    monkeypatch.setattr(call_journal.asyncio, "sleep", instant)


async def test_a_locked_database_is_retried_until_the_write_lands() -> None:
    journal = LockedJournal(failures=2)
    log = CallLog(journal, 7)  # type: ignore[arg-type]
    await log.event("choice", {"key": "1"})
    await log.finish("completed", "caller hung up", "note")
    assert journal.events == [(7, "choice")] and journal.finished == [(7, "completed")]


async def test_an_event_that_never_lands_is_skipped_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = LockedJournal(failures=call_journal.EVENT_TRIES)
    log = CallLog(journal, 8)  # type: ignore[arg-type]
    await log.event("prompt", {"tokens": ["menu"]})  # no exception reaches the flow
    assert journal.events == []
    assert "event prompt not written after 3 tries" in caplog.text
    await log.finish("completed", "caller hung up", "note")  # the next write works again
    assert journal.finished == [(8, "completed")]


async def test_the_note_is_retried_longer_than_an_event() -> None:
    journal = LockedJournal(failures=call_journal.DB_TRIES - 1)
    await CallLog(journal, 9).finish("completed", "done", "note")  # type: ignore[arg-type]
    assert journal.finished == [(9, "completed")]


class LockedBook:
    """A recording book whose close is refused `failures` times (the FLAC is already made)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.closed: list[int] = []

    def close(self, recording_id: int, call_seconds: float | None = None) -> Any:
        if self.failures:
            self.failures -= 1
            raise OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked"))
        self.closed.append(recording_id)
        return SimpleNamespace(loss=None)


async def test_a_recordings_close_outlasts_a_long_lock() -> None:
    # Past the call's DB_TRIES (~20 s) the finished recording's row is still retried: a soak
    # on SQLite left 5 recordings "in progress" by giving up there.
    book = LockedBook(failures=DB_TRIES + 10)
    metrics: collections.Counter[str] = collections.Counter()
    recorder = Recorder(engine=None, book=book, metrics=metrics)  # type: ignore[arg-type]
    await recorder.close(12, lambda: None, 3.0)
    assert book.closed == [12]
    assert metrics["recordings_total"] == 1 and not metrics["recordings_failed_total"]
