"""Tables of the calls made about an account: the call, its events, notes, recordings,
transcripts, how it went (outcomes), the outbound attempts reserved before dialling, the
webhook outbox a note queues, and the write-behind's written batches."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    insert,
    select,
)
from sqlalchemy.orm import (
    Mapped,
    Session,
    mapped_column,
)

from accounts.orm import Base, UtcDateTime, utcnow

CALL_DIRECTIONS = ("inbound", "outbound")
CALL_STATUSES = ("in_progress", "completed", "interrupted", "failed")
CALLS_BY_ACCOUNT = "ix_calls_account_direction_started"


class Call(Base):
    __tablename__ = "calls"
    # Outbound guardrails count an account's recent calls (accounts/guardrails.py).
    # AUTOINCREMENT on SQLite: a worker reserves ids ahead (accounts/idblocks.py).
    __table_args__ = (
        Index(CALLS_BY_ACCOUNT, "account_id", "direction", "started_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    direction: Mapped[str] = mapped_column(String(8))
    # Caller, callee and Call-ID come off the wire at any length: unbounded, since PostgreSQL
    # refuses an over-long VARCHAR (SQLite never checks) and the call would go unjournaled.
    caller: Mapped[str | None] = mapped_column(Text)
    callee: Mapped[str | None] = mapped_column(Text)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    worker: Mapped[str] = mapped_column(String(100))
    sip_call_id: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="in_progress")
    end_reason: Mapped[str | None] = mapped_column(String(100))
    summary: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    answered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


class CallEvent(Base):
    __tablename__ = "call_events"
    # Guards against two writers picking the same next seq for one call.
    __table_args__ = (UniqueConstraint("call_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    author: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)


RECORDING_STATUSES = ("recording", "final", "interrupted", "deleted")
RECORDING_KINDS = ("call", "voicemail")


class Recording(Base):
    """The audio of a call (or a voicemail) on disk.

    `path` is relative to the recordings folder and built from ids only, never from caller
    input. While the call runs the audio grows in a `.part` file; at the end it is finalised
    into FLAC, its SHA-256 stored, and from then on it is immutable. A recording cut off by a
    crash is repaired at start-up and marked `interrupted`. `pauses` are the PCI gaps
    (silence in the file), in seconds from the start: [{"start": 12.0, "end": 40.5}, ...].
    """

    __tablename__ = "recordings"
    __table_args__ = {"sqlite_autoincrement": True}  # ids reserved ahead (accounts/idblocks.py)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="call")
    path: Mapped[str] = mapped_column(String(500))
    format: Mapped[str] = mapped_column(String(8), default="flac")
    sample_rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="recording")
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    finalized_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    duration_s: Mapped[float | None] = mapped_column()
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    pauses: Mapped[list[dict[str, float]]] = mapped_column(JSON, default=list)
    loss: Mapped[str | None] = mapped_column(Text)  # e.g. "disk full at 42.3 s: 12.0 s lost"
    retain_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), index=True)
    legal_hold: Mapped[bool] = mapped_column(default=False)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


class Transcript(Base):
    """What was said on a call, one row per utterance, written as each utterance ends.

    `text` is what recording search matches words against; `words` keeps the recogniser's
    timings: [{"word": "balance", "start": 1.2, "end": 1.6, "conf": 0.93}, ...].
    """

    __tablename__ = "transcripts"

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    recording_id: Mapped[int | None] = mapped_column(ForeignKey("recordings.id"))
    speaker: Mapped[str] = mapped_column(String(32))  # "caller", "agent", "ivr", ...
    text: Mapped[str] = mapped_column(Text)
    # Seconds into the call's recording, and the mean word confidence (0..1).
    start_s: Mapped[float | None] = mapped_column()
    end_s: Mapped[float | None] = mapped_column()
    confidence: Mapped[float | None] = mapped_column()
    words: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # What produced it: "live" recognition of the call's audio, or "rendered" (the IVR's own
    # prompts: the text we played, never recognised). Added after databases existed: see
    # ADDED_COLUMNS.
    source: Mapped[str] = mapped_column(String(16), default="live", server_default="live")

    @staticmethod
    def of_call(session: Session, call_id: int) -> list[dict[str, Any]]:
        """A call's stored utterances, in time order, as the API and the webhook show them."""
        rows = session.scalars(
            select(Transcript)
            .where(Transcript.call_id == call_id)
            .order_by(Transcript.start_s, Transcript.id)
        )
        return [t.as_dict() for t in rows]

    def as_dict(self) -> dict[str, Any]:
        """The utterance as the API and the webhook show it."""
        return {
            "speaker": self.speaker,
            "start": self.start_s,
            "end": self.end_s,
            "text": self.text,
            "confidence": self.confidence,
            "words": self.words or [],
            "source": self.source,
        }


class WebhookOutbox(Base):
    """One pending (or finished) webhook delivery; survives restarts (accounts/webhook.py).

    A row is added in the same transaction as the note it announces, so a note is never
    committed without its delivery queued. Delivered: `delivered_at`; given up after
    `webhook.max_attempts`: `failed_at`; otherwise due at `next_attempt_at`.
    """

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    event: Mapped[str] = mapped_column(String(32))  # "note.created"
    note_id: Mapped[int | None] = mapped_column(ForeignKey("notes.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime(), index=True)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    failed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)


@event.listens_for(Note, "after_insert")
def _queue_note_webhook(_mapper: Any, connection: Any, note: Note) -> None:
    # Same connection, same transaction as the note (ORM inserts; a bulk insert() skips this).
    now = utcnow()
    connection.execute(
        insert(WebhookOutbox).values(
            event="note.created", note_id=note.id, created_at=now, attempts=0, next_attempt_at=now
        )
    )


# What a collector marks a call as (accounts/outcomes.py). A right-party contact is a
# conversation with the customer; the outbound guardrails pause calling after one.
OUTCOME_KINDS = ("reached", "no_answer", "left_message", "promise_to_pay", "dispute", "follow_up")
RIGHT_PARTY_OUTCOMES = ("reached", "promise_to_pay", "dispute", "follow_up")


class CallOutcome(Base):
    """How a call went, as marked by a collector. A call may be marked again (a correction):
    every marking is kept, the latest (highest id) counts. `amount_cents` and `currency`
    (the account's) belong to promise_to_pay; `promise_date` to promise_to_pay;
    `follow_up_date` to follow_up. `collector_id` is the account's collector when marked;
    `note_id` the outcome note filed on the account with it."""

    __tablename__ = "call_outcomes"
    __table_args__ = (Index("ix_call_outcomes_account", "account_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    collector_id: Mapped[int | None] = mapped_column(ForeignKey("collectors.id"))
    user: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(16))
    amount_cents: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    promise_date: Mapped[dt.date | None] = mapped_column(Date)
    follow_up_date: Mapped[dt.date | None] = mapped_column(Date)
    text: Mapped[str | None] = mapped_column(Text)
    note_id: Mapped[int | None] = mapped_column(ForeignKey("notes.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class OutboundAttempt(Base):
    """An outbound attempt on an account, reserved before anything is dialled.

    The guardrails' attempt limit counts these (accounts/attempts.py): one is inserted under the
    account's lock by the check that allows the call, then attached to the call it became, or
    released when nothing was sent.
    """

    __tablename__ = "outbound_attempts"
    __table_args__ = (Index("ix_outbound_attempts_account_at", "account_id", "reserved_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    destination: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(120))  # who asked: "api:dana", "softphone:alice"
    reserved_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    call_id: Mapped[int | None] = mapped_column(ForeignKey("calls.id"), unique=True)
    released_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    release_reason: Mapped[str | None] = mapped_column(String(200))


# create_all adds indexes only with a new table: a database made before the calls index
# existed gets it when call_outcomes is created in it (a no-op on a new database).
event.listen(
    CallOutcome.__table__,
    "after_create",
    DDL(
        f"CREATE INDEX IF NOT EXISTS {CALLS_BY_ACCOUNT} "
        "ON calls (account_id, direction, started_at)"
    ),
)


class WrittenBatch(Base):
    """A batch of call writes already in the database (accounts/write_behind.py): a batch
    replayed from a worker's spool after a crash is recognised and not written twice."""

    __tablename__ = "written_batches"

    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    written_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)


# Columns added to a table after databases were made with it: create_schema (accounts/db.py)
# adds each one missing, with its server default, so existing rows get a value.
ADDED_COLUMNS = (Transcript.__table__.c.source,)
