"""The call journal: every row a call writes (its row, events, utterances, notes, its
recording's row when planned ahead) and the CRM's transcript owed once the call is whole.

Each method opens and closes its own session (or runs in the write-behind's batch:
accounts/write_behind.py), so callers never hold a database connection across audio I/O.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from accounts import attempts, transcription
from accounts.models import (
    CALL_DIRECTIONS,
    CALL_STATUSES,
    Call,
    CallEvent,
    Note,
    Recording,
    Transcript,
    WebhookOutbox,
    utcnow,
)
from accounts.services import UnknownCall, currency_of
from accounts.transcription import TranscriptionJob
from accounts.webhook import TRANSCRIPT_EVENT

_FINAL_STATUSES = tuple(s for s in CALL_STATUSES if s != "in_progress")


def owe_transcript(session: Session, call_id: int) -> bool:
    """Queue a `note.transcript` delivery of the call's note, in the caller's transaction
    (also when an after-call transcript lands: voice/asr/after.py).

    The CRM gets the call's transcript once it is whole: not while an after-call job of one of
    the call's recordings is still to land (that job owes it when it does). The call's row is
    locked first so two jobs of one call landing at once (PostgreSQL's runners) are taken in
    turn: the second sees the first done, and only the last to land sends.
    """
    session.scalar(select(Call.id).where(Call.id == call_id).with_for_update())
    unfinished = session.scalar(
        select(TranscriptionJob.id)
        .where(
            TranscriptionJob.call_id == call_id,
            TranscriptionJob.state.in_((transcription.PENDING, transcription.RUNNING)),
        )
        .limit(1)
    )
    if unfinished is not None:
        return False
    note_id = session.scalar(
        select(Note.id).where(Note.call_id == call_id, Note.kind == "call").limit(1)
    )
    said = session.scalar(select(Transcript.id).where(Transcript.call_id == call_id))
    if note_id is None or said is None:
        return False
    now = utcnow()
    session.add(
        WebhookOutbox(
            event=TRANSCRIPT_EVENT, note_id=note_id, created_at=now, attempts=0, next_attempt_at=now
        )
    )
    return True


class CallJournal:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def start_call(
        self,
        *,
        direction: str,
        caller: str | None,
        callee: str | None,
        worker: str,
        sip_call_id: str,
        call_id: int | None = None,
        at: dt.datetime | None = None,
    ) -> int:
        """The call's row: its id. `call_id`/`at`: an id reserved ahead and the real start, for
        a row written behind the call (accounts/idblocks.py, accounts/write_behind.py)."""
        if direction not in CALL_DIRECTIONS:
            raise ValueError(f"direction must be one of {CALL_DIRECTIONS}, got {direction!r}")
        call = Call(
            id=call_id,
            direction=direction,
            caller=caller,
            callee=callee,
            worker=worker,
            sip_call_id=sip_call_id,
            status="in_progress",
            started_at=at or utcnow(),
        )
        with self._sessions.begin() as session:
            session.add(call)
            session.flush()
            return call.id

    def open_call(self, call_id: int, *, at: dt.datetime, **parties: Any) -> None:
        """`start_call` with its reserved id, as the write-behind hands it over."""
        self.start_call(call_id=call_id, at=at, **parties)

    def open_recording(self, call_id: int, *, at: dt.datetime, **row: Any) -> None:
        """A recording row planned by the worker (recordings/book.py `RecordingBook.plan`,
        id reserved ahead), written behind the call; `at`: when it started."""
        retain = row.pop("retain_until", None)
        with self._sessions.begin() as session:
            session.add(Recording(call_id=call_id, started_at=at, status="recording",
                                  retain_until=retain and dt.datetime.fromisoformat(retain),
                                  **row))  # fmt: skip

    def answered(self, call_id: int, *, at: dt.datetime | None = None) -> None:
        """`at`: when it was answered, for a write made later (accounts/write_behind.py)."""
        with self._sessions.begin() as session:
            call = self._get(session, call_id)
            # Keep the first answer time if a re-INVITE reports it again.
            if call.answered_at is None:
                call.answered_at = at or utcnow()

    def add_event(
        self,
        call_id: int,
        kind: str,
        detail: dict[str, Any] | None = None,
        *,
        at: dt.datetime | None = None,
    ) -> None:
        with self._sessions.begin() as session:
            self._get(session, call_id)
            last_seq = select(func.max(CallEvent.seq)).where(CallEvent.call_id == call_id)
            last = session.scalar(last_seq)
            session.add(
                CallEvent(
                    call_id=call_id,
                    seq=(last or 0) + 1,
                    at=at or utcnow(),
                    kind=kind,
                    detail=dict(detail or {}),
                )
            )

    def add_transcript(
        self,
        call_id: int,
        *,
        speaker: str,
        text: str,
        start: float,
        end: float,
        confidence: float,
        words: list[dict[str, Any]],
        recording_id: int | None = None,
        source: str = "live",
    ) -> int:
        """Store one utterance of the call (as it ends, so a crash keeps the rest); `source`
        says what produced it: "live" recognition, or "rendered" (what the IVR said)."""
        with self._sessions.begin() as session:
            self._get(session, call_id)
            row = Transcript(
                call_id=call_id,
                recording_id=recording_id,
                speaker=speaker,
                text=text,
                start_s=start,
                end_s=end,
                confidence=confidence,
                words=words,
                source=source,
            )
            session.add(row)
            session.flush()
            return row.id

    def transcript_ready(self, call_id: int) -> bool:
        """Owe the CRM the call's finished transcript: a `note.transcript` delivery of its note.

        False when there is nothing to send (no note: the call reached no account; or no
        utterance was stored).
        """
        with self._sessions.begin() as session:
            return owe_transcript(session, call_id)

    def set_account(self, call_id: int, account_id: int) -> None:
        with self._sessions.begin() as session:
            call = self._get(session, call_id)
            currency_of(session, account_id)  # clear error instead of a foreign key failure
            call.account_id = account_id

    def attach_attempt(self, call_id: int, attempt_id: int) -> None:
        """The call is the outbound attempt the guardrails reserved for it: counted once."""
        with self._sessions.begin() as session:
            attempts.attach_in(session, attempt_id, call_id)

    def add_note(
        self,
        call_id: int,
        account_id: int,
        *,
        kind: str,
        author: str,
        body: str,
        at: dt.datetime | None = None,
    ) -> int:
        """A note of the call's other than its closing one (a voicemail's): its id."""
        with self._sessions.begin() as session:
            return _add_note(session, account_id, call_id, kind, author, body, at or utcnow())

    def finish_call(
        self,
        call_id: int,
        *,
        status: str,
        end_reason: str,
        summary: str,
        author: str = "ivr",
        at: dt.datetime | None = None,
    ) -> int | None:
        """Close the call and, if it reached an account, file its note; returns the note id.

        Both writes share one transaction so a crash can never leave a finished call without
        its note on the account (or a note for a call still shown as in progress).
        """
        if status not in _FINAL_STATUSES:
            raise ValueError(f"status must be one of {_FINAL_STATUSES}, got {status!r}")
        with self._sessions.begin() as session:
            call = self._get(session, call_id)
            if call.status != "in_progress":
                raise ValueError(f"call {call_id} is already finished ({call.status})")
            now = at or utcnow()
            call.status = status
            call.end_reason = end_reason
            call.summary = summary
            call.ended_at = now
            if call.account_id is None:
                return None
            return _add_note(session, call.account_id, call.id, "call", author, summary, now)

    def interrupt_calls(
        self, worker: str, reason: str, call_ids: list[int] | None = None
    ) -> list[int]:
        """Close every call `worker` still shows in progress (it died), filing their notes;
        with `call_ids`, only those (the calls a restarted worker's spool just wrote).

        The note keeps what the caller did before the interruption, read back from the call's
        events, so a collector sees the call even though the flow never wrote its own note.
        """
        closed = []
        with self._sessions.begin() as session:
            stmt = select(Call).where(Call.worker == worker, Call.status == "in_progress")
            if call_ids is not None:
                stmt = stmt.where(Call.id.in_(call_ids))
            for call in session.scalars(stmt):
                kinds = session.execute(
                    select(CallEvent.kind, CallEvent.detail)
                    .where(CallEvent.call_id == call.id)
                    .order_by(CallEvent.seq)
                ).all()
                choices = [d.get("option", "?") for k, d in kinds if k == "choice"]
                party = call.caller if call.direction == "inbound" else call.callee
                lines = [
                    f"{call.direction.capitalize()} call "
                    f"{'from' if call.direction == 'inbound' else 'to'} "
                    f"{party or 'a withheld number'} was interrupted: {reason}.",
                    "Caller actions before that: " + "; ".join(choices) + "."
                    if choices
                    else "No menu actions before that.",
                ]
                now = utcnow()
                call.status, call.end_reason, call.ended_at = "interrupted", reason[:100], now
                call.summary = "\n".join(lines)
                if call.account_id is not None:
                    session.add(
                        Note(
                            account_id=call.account_id,
                            call_id=call.id,
                            created_at=now,
                            author="supervisor",
                            kind="call",
                            body=call.summary,
                        )
                    )
                closed.append(call.id)
        return closed

    def events(self, call_id: int) -> list[tuple[str, dict[str, Any]]]:
        stmt = (
            select(CallEvent.kind, CallEvent.detail)
            .where(CallEvent.call_id == call_id)
            .order_by(CallEvent.seq)
        )
        with self._sessions() as session:
            return [(kind, detail) for kind, detail in session.execute(stmt)]

    def notes_for_account(self, account_id: int) -> list[Note]:
        stmt = select(Note).where(Note.account_id == account_id).order_by(Note.created_at, Note.id)
        with self._sessions() as session:
            return list(session.scalars(stmt))

    @staticmethod
    def _get(session: Session, call_id: int) -> Call:
        call = session.get(Call, call_id)
        if call is None:
            raise UnknownCall(f"no call with id {call_id}")
        return call


def _add_note(
    session: Session,
    account_id: int,
    call_id: int,
    kind: str,
    author: str,
    body: str,
    at: dt.datetime,
) -> int:
    note = Note(
        account_id=account_id, call_id=call_id, created_at=at, author=author, kind=kind, body=body
    )
    session.add(note)
    session.flush()
    return note.id
