"""Every database write one call makes, through one `CallLog` with its retries.

The call's row (`start`), its answer time, its account (found by the IVR, or the attempt the
guardrails reserved), its progress events, notes (a voicemail's), outcome codes keyed by the
collector or a caller's promise to pay, right-party verification tries, the transcript's
utterances as they end, and the closing note with its recording lines, after which the CRM is
owed the transcript.

Bookkeeping must never end a customer's call: a write that fails (SQLite's lock held past
its busy timeout on a saturated machine, a database restart) is retried with back-off
(accounts/retry.py); an event that still fails is logged and skipped, while the note and the
transcript are retried longest (start-up repair closes what is left).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from accounts import attempts, verification
from accounts.call_journal import CallJournal
from accounts.outcomes import Marking, mark_outcome
from accounts.retry import DB_ERRORS, DB_TRIES, retry_db
from accounts.views import AccountSummary
from accounts.write_behind import WriteBehind
from recordings.book import RecordingBook
from voice.asr.live import Segment

log = logging.getLogger(__name__)

EVENT_TRIES = 3  # a call event: ~0.75 s of retries, then it is skipped (the call goes on)
# The call's own rows (start, closing note, finish, transcript) take DB_TRIES, ~20 s of
# retries (accounts/retry.py); start-up repair closes what is left.
TRANSCRIPT_WAIT = 60.0  # seconds the last utterances may take to be stored after hang-up
# A read that needs the call's earlier writes in (the note, before its recording lines; the
# account, before an outcome) waits this long for the write-behind, then goes ahead.
FLUSH_WAIT = 10.0


class CallLog:
    """The IVR's `Journal` for one call, and every other write the call makes.

    `sessions` (attempts, outcomes, verification tries, notes), `book` (recording lines on the
    note) and `metrics` are what a worker's call has; a unit test may give only the journal.

    With `writes` (the worker's accounts/write_behind.WriteBehind) the call's events, answer
    time, account, utterances and closing note are handed over and the call goes on at once,
    whatever the database does; without it each is written here, retried (accounts/retry.py).
    A write whose result the call needs (an outcome the rules may refuse, a verification try
    the next lock-out check must see) is always written here, after the queue is flushed when
    it depends on the call's earlier writes.
    """

    def __init__(
        self,
        journal: CallJournal,
        call_id: int,
        *,
        sessions: sessionmaker[Session] | None = None,
        book: RecordingBook | None = None,
        metrics: collections.Counter[str] | None = None,
        writes: WriteBehind | None = None,
        owes_transcript: bool = True,
    ) -> None:
        self._journal = journal
        self._owes_transcript = owes_transcript  # False: an after-call job sends it instead
        self._writes = writes
        self.call_id = call_id
        self._sessions = sessions
        self._book = book
        self._metrics = metrics if metrics is not None else collections.Counter()
        self._storing: set[asyncio.Task[None]] = set()  # utterance writes in flight
        self._last = 0  # the write-behind's number of the call's last write handed over

    @classmethod
    async def start(
        cls, journal: CallJournal, *, sip_call_id: str, worker: str, **parties: Any
    ) -> int:
        """The call's row (direction, caller, callee): its id. Retried longest, then raised."""
        return await retry_db(
            DB_TRIES, journal.start_call, sip_call_id=sip_call_id, worker=worker, **parties
        )

    def open(self, **row: Any) -> None:
        """The call's row, under the id reserved for it (`CallKit.open_log`), written behind."""
        if not self._behind("open_call", **row):
            raise ValueError(f"call {self.call_id}: its row cannot be written behind")

    @property
    def behind(self) -> bool:
        """Whether the call's writes are handed to a write-behind."""
        return self._writes is not None

    @property
    def last(self) -> int:
        """The write-behind's number of the call's last write handed over (0: none)."""
        return self._last

    def hand_over(self, write: str, at: dt.datetime | None = None, **kwargs: Any) -> None:
        """`write` (one of accounts/write_behind.py's WRITES) behind the call, after its
        earlier ones; needs `behind`."""
        assert self._writes is not None
        self._last = self._writes.submit(write, self.call_id, at=at, **kwargs)

    # -- the IVR's Journal --------------------------------------------------------------------

    async def event(self, kind: str, detail: dict[str, Any]) -> None:
        if not self._behind("add_event", kind=kind, detail=detail):
            await self._write(f"event {kind}", EVENT_TRIES, self._journal.add_event, kind, detail)

    async def identified(self, account: AccountSummary, how: str) -> None:
        if not self._behind("set_account", account_id=int(account.id)):
            await self._write("account", EVENT_TRIES, self._journal.set_account, account.id)
        await self.event("identified", {"account": account.number, "how": how})

    async def finish(self, status: str, end_reason: str, summary: str) -> None:
        if self._behind("finish_call", status=status, end_reason=end_reason, summary=summary):
            return

        def finish_call(call_id: int) -> None:
            self._journal.finish_call(
                call_id, status=status, end_reason=end_reason, summary=summary
            )

        await self._write("note", DB_TRIES, finish_call)

    # -- the rest of a call's writes ----------------------------------------------------------

    async def answered(self) -> None:
        """Without a write-behind, raises when the database still refuses (an inbound call is
        not taken then)."""
        if not self._behind("answered"):
            await retry_db(EVENT_TRIES, self._journal.answered, self.call_id)

    async def set_account(self, account_id: int) -> None:
        if not self._behind("set_account", account_id=int(account_id)):
            await retry_db(EVENT_TRIES, self._journal.set_account, self.call_id, int(account_id))

    async def attach_attempt(self, attempt: int) -> None:
        """This call is the attempt the guardrails reserved (accounts/attempts.py): it counts
        once, on the attempt's account."""
        assert self._sessions is not None
        # Behind the call's own row, like its events: a Make a Call request must not wait on
        # a busy database (under SQLite's lock this wait outlasted the API's 10 s: a 500).
        if self._behind("attach_attempt", attempt_id=int(attempt)):
            return
        await self.flushed()  # the call's row, which the attempt names
        await retry_db(EVENT_TRIES, attempts.attach, self._sessions, int(attempt), self.call_id)

    async def add_note(self, account_id: int, kind: str, author: str, body: str) -> int | None:
        """A note besides the closing one (a voicemail's). Behind the call like its other
        writes (its id is then not known yet: None): a direct write that met a locked SQLite
        for its ~20 s of retries lost the voicemail's note and failed the call (soak,
        2026-12-04). Without a write-behind: written now, its id, retried longest, then raised."""
        note = {"account_id": int(account_id), "kind": kind, "author": author, "body": body}
        if self._behind("add_note", **note):
            return None
        await self.flushed()
        return await retry_db(
            DB_TRIES,
            self._journal.add_note,
            self.call_id,
            account_id,
            kind=kind,
            author=author,
            body=body,
        )

    async def mark_outcome(self, marking: Marking, user: str, *, tries: int = EVENT_TRIES) -> int:
        """An outcome code (keyed on the collector's phone; a caller's promise to pay, with
        more `tries`): its id. Raises OutcomeError/LookupError, or the database's refusal.

        Written now, not behind: the rules may refuse it and whoever keyed it is told."""
        sessions = self._sessions
        assert sessions is not None

        def mark() -> int:
            with sessions.begin() as session:
                return mark_outcome(session, self.call_id, marking, user=user).id

        await self.flushed()  # the call's account must be in
        return await retry_db(tries, mark)

    async def verification_attempt(
        self, caller: str, account_id: int, kind: str, ok: bool, try_no: int
    ) -> None:
        """One right-party verification try, and a failed one's audit row
        (accounts/verification.py `record_attempt`).

        Written now and waited for, never handed to the write-behind: the lock-out check of
        the caller's next call, on this worker or another, must count it (read-your-writes),
        and a write queued behind is in no other worker's view, nor in the database, until it
        is flushed. Retried as long as the note (a lost try weakens the lock-out); one that
        still fails is logged and the call goes on: the caller's answer stands."""
        sessions = self._sessions
        assert sessions is not None

        def record() -> None:
            with sessions.begin() as session:
                verification.record_attempt(
                    session, caller, account_id, self.call_id, kind, ok, try_no
                )

        await self.flushed()  # the call's row, which the try names
        try:
            await retry_db(DB_TRIES, record)
        except DB_ERRORS as exc:
            log.error("call %d: verification attempt not journaled: %s", self.call_id, exc)

    async def close(self, status: str, reason: str, summary: str, author: str) -> None:
        """A collector-placed call's end: its note (by the collector), the recording lines,
        then the transcript owed to the CRM once its last utterances are in."""

        closing = {
            "status": status,
            "end_reason": reason[:100],
            "summary": f"{summary}\nEnded: {reason}.",
            "author": author[:100],
        }
        if not self._behind("finish_call", **closing):
            try:
                await retry_db(DB_TRIES, lambda: self._journal.finish_call(self.call_id, **closing))
            except (OperationalError, DBAPIError) as exc:
                log.error("call %d: note not written: %s", self.call_id, exc)
        await self.annotate()
        await self.transcript_done()  # the bridge's recognisers closed with it

    async def annotate(self) -> None:
        """The lines of recordings finalised before the note was written, added to it."""
        assert self._book is not None
        await self.flushed()  # the note they go on
        try:
            await retry_db(EVENT_TRIES, self._book.annotate, self.call_id)
        except (OperationalError, DBAPIError) as exc:
            log.error("call %d: recording lines not added to the note: %s", self.call_id, exc)

    # -- the transcript -------------------------------------------------------------------------

    def segment_writer(self, recording_id: int | None) -> Callable[[Segment], None]:
        """`CallSpeech.on_segment` for utterances timed against `recording_id`."""
        return lambda seg: self.store_soon(recording_id, seg)

    def store_soon(self, recording_id: int | None, seg: Segment) -> None:
        if self._behind("add_transcript", recording_id=recording_id, **_utterance(seg)):
            self._metrics["transcript_segments_total"] += 1
            return
        task = asyncio.create_task(self._store(recording_id, seg))
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    async def transcript_done(self) -> None:
        """Once every stored utterance is in, owe the CRM the transcript (if there is one)."""
        if not self._owes_transcript:
            return
        if self._behind("transcript_ready"):  # written after the utterances handed over before
            return
        pending, self._storing = self._storing, set()
        if pending:
            await asyncio.wait(pending, timeout=TRANSCRIPT_WAIT)
        try:
            await retry_db(DB_TRIES, self._journal.transcript_ready, self.call_id)
        except (OperationalError, DBAPIError) as exc:
            log.error("call %d: transcript delivery not queued: %s", self.call_id, exc)

    async def _store(self, recording_id: int | None, seg: Segment) -> None:
        try:
            await retry_db(
                DB_TRIES,
                self._journal.add_transcript,
                self.call_id,
                recording_id=recording_id,
                **_utterance(seg),
            )
        except (OperationalError, DBAPIError) as exc:
            log.error("call %d: transcript segment not written: %s", self.call_id, exc)
        self._metrics["transcript_segments_total"] += 1

    async def flushed(self) -> None:
        """Wait (up to FLUSH_WAIT) until the call's writes handed over so far are in (other
        calls' later ones need not be)."""
        if self._writes is not None and not await self._writes.through(self._last, FLUSH_WAIT):
            log.warning("call %d: earlier writes still wait for the database", self.call_id)

    def _behind(self, write: str, **kwargs: Any) -> bool:
        """Hand `write` to the write-behind (returns at once); False when there is none."""
        if self._writes is None:
            return False
        try:
            self.hand_over(write, **kwargs)
        except (TypeError, ValueError) as exc:  # not JSON: written here instead, as before
            log.error("call %d: %s cannot wait in the spool (%s): written now", self.call_id,
                      write, exc)  # fmt: skip
            return False
        return True

    async def _write(self, what: str, tries: int, fn: Callable[..., Any], *args: Any) -> None:
        try:
            await retry_db(tries, fn, self.call_id, *args)
        except (OperationalError, DBAPIError) as exc:
            log.error("call %d: %s not written after %d tries: %s", self.call_id, what, tries, exc)


def _utterance(seg: Segment) -> dict[str, Any]:
    return {
        "speaker": seg.speaker,
        "text": seg.text,
        "start": seg.start,
        "end": seg.end,
        "confidence": round(seg.confidence, 3),
        "words": [dict(w) for w in seg.words],
        "source": seg.source,
    }
