"""A worker's call writes, done behind the call: the call never waits on the database.

A call submits each write (an event, its answer time, an utterance, the closing note) and goes
on at once. One task per worker writes them in order, many per transaction. When the database
refuses (SQLite's lock held past its busy timeout on a saturated machine, PostgreSQL
restarting), the batch is appended to a spool file on local disk and fsynced before the task
backs off and tries again: a write is never dropped for being early, and a worker killed or
stopped with writes still owed leaves them in its spool, which the next worker of that name
drains before anything else.

Each batch carries an id, recorded in `written_batches` in the batch's own transaction, so a
batch replayed from the spool after a crash between commit and spool clean-up is not written
twice. A write the database rejects for what it is (a foreign key, a call already closed) is not
retried: its batch is written one write at a time and that one write is logged and dropped, so
one bad write never holds up the queue.

Writes are `CallJournal` methods by name with JSON arguments (they must survive a restart);
each runs inside the batch's transaction, not its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from accounts.call_journal import CallJournal
from accounts.models import WrittenBatch, utcnow
from accounts.retry import BATCH_SECONDS, show_backlog

log = logging.getLogger(__name__)

# The CallJournal methods a call may hand over. Each takes the call id first; `at` is when the
# call made the write, so a write that waited in the spool keeps its real time.
WRITES = frozenset(
    {"open_call", "open_recording", "add_event", "answered", "set_account", "attach_attempt",
     "add_transcript", "add_note", "finish_call", "transcript_ready"}
)  # fmt: skip
TIMED = frozenset(
    {"open_call", "open_recording", "add_event", "answered", "add_note", "finish_call"}
)
# The writes that make a call's rows (ids reserved ahead: accounts/idblocks.py). Found in a
# spool at start, they are calls of a worker that died before writing them: nobody else
# knows of them, so they are closed once written (`on_replayed`).
OPENS = frozenset({"open_call", "open_recording"})
BATCH_MAX = 200  # writes per transaction
BACKOFF_S = (0.05, 5.0)  # first and longest pause after a refusal
KEEP_BATCH_IDS = dt.timedelta(days=2)  # replays come from a restart, minutes later at most


@dataclass
class Batch:
    id: str
    writes: list[dict[str, Any]]
    spooled: bool = False
    tries: int = 0
    replayed: bool = False  # read from the spool at start: an earlier process's writes

    @property
    def last_seq(self) -> int:
        """The submission number of its last write (0: not this process's)."""
        return 0 if self.replayed else max((w.get("seq", 0) for w in self.writes), default=0)

    def line(self) -> str:
        return json.dumps({"id": self.id, "writes": self.writes}, separators=(",", ":")) + "\n"


@dataclass
class Stats:
    submitted: int = 0
    written: int = 0
    dropped: int = 0  # rejected by the database for what they are
    refusals: int = 0  # batches the database refused (locked, unreachable): spooled, retried
    replayed: int = 0  # spooled writes found at start
    oldest: collections.deque[float] = field(default_factory=collections.deque)


class _InBatch:
    """A `sessionmaker` stand-in that hands every `begin()` the batch's open session."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def begin(self) -> contextlib.nullcontext[Session]:
        return contextlib.nullcontext(self._session)


def transient(exc: BaseException) -> bool:
    """The database could not take the write now (try again), not "this write is wrong"."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class WriteBehind:
    """One worker's queue of call writes; `run()` is its writer task."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        spool: Path,
        on_replayed: Callable[[list[int]], Awaitable[None]] | None = None,
    ) -> None:
        self._sessions = sessions
        self.spool = spool
        # The calls whose rows came from a dead process's spool: closed (interrupted, their
        # recordings repaired) by `on_replayed` once the spool is written.
        self.on_replayed = on_replayed
        self.replayed_calls: set[int] = set()
        self._repairs: set[asyncio.Task[None]] = set()
        self._seq = 0  # writes submitted by this process
        self._through = 0  # every write up to this submission number is done
        self._moved = asyncio.Event()
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._spooled: collections.deque[Batch] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.stats = Stats()
        self._load_spool()

    # -- the call's side ----------------------------------------------------------------------

    def submit(
        self, write: str, call_id: int, *, at: dt.datetime | None = None, **kwargs: Any
    ) -> int:
        """Queue `CallJournal.<write>(call_id, **kwargs)`; returns at once, with the write's
        submission number (for `through`)."""
        if write not in WRITES:
            raise ValueError(f"not a call write: {write!r}")
        json.dumps(kwargs)  # a write that could not be spooled fails here, in the caller
        self._seq += 1
        self._queue.append({"write": write, "call_id": int(call_id), "kwargs": kwargs,
                            "at": (at or utcnow()).isoformat(), "seq": self._seq})  # fmt: skip
        self.stats.submitted += 1
        self.stats.oldest.append(time.monotonic())
        self._idle.clear()
        self._wake.set()
        show_backlog(len(self._queue), self.spooled)
        return self._seq

    async def through(self, seq: int, timeout: float) -> bool:
        """Wait until the writes submitted up to number `seq` are done (written, or dropped as
        rejected); False if not within `timeout`. Unlike `flush`, later writes do not count:
        a busy worker's queue is seldom empty."""

        async def moved_past() -> None:
            while self._through < seq:
                await self._moved.wait()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(moved_past(), timeout)
        return self._through >= seq

    async def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far is written; False if not within `timeout`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return self._idle.is_set()

    @property
    def pending(self) -> int:
        return len(self._queue) + sum(len(b.writes) for b in self._spooled)

    @property
    def spooled(self) -> int:
        return sum(len(b.writes) for b in self._spooled)

    def oldest_age(self) -> float:
        """Seconds the oldest write not yet in the database has waited (0 when none)."""
        return time.monotonic() - self.stats.oldest[0] if self.stats.oldest else 0.0

    def keep_the_rest(self) -> int:
        """At shutdown: spool whatever is still queued, for the next worker; how many."""
        count = len(self._queue)
        while self._queue:
            self._spool(self._take(BATCH_MAX))
        return count

    # -- the writer task ----------------------------------------------------------------------

    async def run(self) -> None:
        pause = BACKOFF_S[0]
        while True:
            batch = self._next()
            show_backlog(len(self._queue), self.spooled)
            if batch is None:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            started = time.monotonic()
            try:
                await asyncio.to_thread(self._write, batch)
            except Exception as exc:  # noqa: BLE001 - every failure keeps the batch
                BATCH_SECONDS.labels("refused").observe(time.monotonic() - started)
                self.stats.refusals += 1
                batch.tries += 1
                if not batch.spooled:
                    self._spool(batch)
                # What arrives meanwhile goes to disk too: nothing owed waits only in memory.
                while self._queue:
                    self._spool(self._take(BATCH_MAX))
                level = logging.WARNING if batch.tries in (1, 10) else logging.DEBUG
                log.log(level, "%d call writes wait for the database (try %d): %s",
                        len(batch.writes), batch.tries, exc)  # fmt: skip
                await asyncio.sleep(pause)
                pause = min(pause * 2, BACKOFF_S[1])
                continue
            BATCH_SECONDS.labels("written").observe(time.monotonic() - started)
            pause = BACKOFF_S[0]
            self._done(batch)
            if batch.replayed and not any(b.replayed for b in self._spooled):
                self._close_replayed()

    def _next(self) -> Batch | None:
        if self._spooled:
            return self._spooled[0]
        if self._queue:
            return Batch(uuid.uuid4().hex, self._take(BATCH_MAX))
        return None

    def _take(self, count: int) -> list[dict[str, Any]]:
        return [self._queue.popleft() for _ in range(min(count, len(self._queue)))]

    def _done(self, batch: Batch) -> None:
        if batch.last_seq > self._through:
            self._through = batch.last_seq
            self._moved.set()
            self._moved = asyncio.Event()
        for _ in batch.writes:
            if self.stats.oldest:
                self.stats.oldest.popleft()
        if batch.spooled:
            self._spooled.popleft()
            if not self._spooled:
                self._clear_spool()

    def _write(self, batch: Batch) -> None:
        """One transaction for the batch; raises when the database refused it (kept)."""
        # Only a batch tried before (its commit may have landed unreported) or replayed from a
        # spool can have been written already: a fresh one skips the lookup, which was 40 % of
        # a loaded worker's GIL time (py-spy, 2026-12-03).
        maybe_written = batch.replayed or batch.tries > 0
        try:
            with self._sessions.begin() as session:
                if maybe_written and self._seen(session, batch.id):
                    return
                for write in batch.writes:
                    self._apply(session, write)
                self._mark(session, batch.id)
            self.stats.written += len(batch.writes)
            return
        except Exception as exc:
            if transient(exc):
                raise
            first = exc
        # The database rejected something in the batch for what it is: one write at a time,
        # so only the bad one is dropped.
        log.warning("a batch of %d call writes was rejected (%s): writing them one by one",
                    len(batch.writes), first)  # fmt: skip
        for index, write in enumerate(batch.writes):
            part = f"{batch.id}:{index}"
            try:
                with self._sessions.begin() as session:
                    if not (maybe_written and self._seen(session, part)):
                        self._apply(session, write)
                        self._mark(session, part)
                self.stats.written += 1
            except Exception as exc:
                if transient(exc):
                    raise
                self.stats.dropped += 1
                log.error("call %s: %s dropped, the database rejects it: %s",
                          write["call_id"], write["write"], exc)  # fmt: skip
        with self._sessions.begin() as session:
            self._mark(session, batch.id)

    @staticmethod
    def _apply(session: Session, write: dict[str, Any]) -> None:
        journal = CallJournal(_InBatch(session))  # type: ignore[arg-type]
        kwargs = dict(write["kwargs"])
        if write["write"] in TIMED:
            kwargs["at"] = dt.datetime.fromisoformat(write["at"])
        getattr(journal, write["write"])(write["call_id"], **kwargs)
        session.flush()  # a rejected write fails here, where it can be told from the others

    @staticmethod
    def _seen(session: Session, batch_id: str) -> bool:
        return session.get(WrittenBatch, batch_id) is not None

    @staticmethod
    def _mark(session: Session, batch_id: str) -> None:
        now = utcnow()
        # A Core insert: the ORM's unit of work for one bookkeeping row cost more than the row.
        session.execute(insert(WrittenBatch).values(id=batch_id, written_at=now))
        if batch_id.endswith("0") and ":" not in batch_id:  # now and then: old ids go
            session.query(WrittenBatch).filter(
                WrittenBatch.written_at < now - KEEP_BATCH_IDS
            ).delete(synchronize_session=False)

    def _close_replayed(self) -> None:
        ids, self.replayed_calls = sorted(self.replayed_calls), set()
        if not ids or self.on_replayed is None:
            return
        task = asyncio.get_running_loop().create_task(self.on_replayed(ids))
        self._repairs.add(task)
        task.add_done_callback(self._repairs.discard)

    # -- the spool ----------------------------------------------------------------------------

    def _spool(self, batch: Batch | list[dict[str, Any]]) -> None:
        if isinstance(batch, list):
            batch = Batch(uuid.uuid4().hex, batch)
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        with self.spool.open("a", encoding="utf-8") as out:
            out.write(batch.line())
            out.flush()
            os.fsync(out.fileno())
        batch.spooled = True
        self._spooled.append(batch)

    def _clear_spool(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.spool.unlink()
        _fsync_dir(self.spool.parent)

    def _load_spool(self) -> None:
        for batch in read_spool(self.spool):
            batch.spooled = batch.replayed = True
            self.replayed_calls.update(w["call_id"] for w in batch.writes if w["write"] in OPENS)
            self._spooled.append(batch)
            self.stats.replayed += len(batch.writes)
            self.stats.oldest.extend([time.monotonic()] * len(batch.writes))
        if self._spooled:
            self._idle.clear()
            log.warning("%d call writes kept from before are written first (%s)",
                        self.stats.replayed, self.spool)  # fmt: skip


def read_spool(path: Path) -> Iterator[Batch]:
    """The batches a spool file holds; a line cut short by a crash mid-append is skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
            yield Batch(str(entry["id"]), list(entry["writes"]))
        except (ValueError, KeyError, TypeError):
            log.error("%s line %d: not a whole batch (cut by a crash?): skipped", path, number)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
