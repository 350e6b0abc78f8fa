"""Database tables for accounts, their contacts and documents, and the calls made about them.

Money is stored as integer cents: exact, and no Decimal conversion warnings from SQLite; 64-bit,
since a 32-bit PostgreSQL integer ends at 21,474,836.47.
Timestamps are timezone-aware UTC on the Python side whatever the backend stores.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    insert,
    select,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    validates,
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out; SQLite has no time zone storage so UTC is implied there."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive value could be local time; refuse rather than store a wrong instant.
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware value")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class Collector(Base):
    __tablename__ = "collectors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Collectors created by a CSV import only have a name until someone fills these in.
    email: Mapped[str | None] = mapped_column(String(320))
    sip_uri: Mapped[str | None] = mapped_column(String(320))
    active: Mapped[bool] = mapped_column(default=True)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300))


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    collector_id: Mapped[int | None] = mapped_column(ForeignKey("collectors.id"))
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    timezone: Mapped[str] = mapped_column(String(64), default="America/New_York")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)

    customer: Mapped[Customer] = relationship(lazy="joined")


class Contact(Base):
    __tablename__ = "contacts"
    # One number may belong to several accounts (e.g. a customer's AP desk), but only once each.
    __table_args__ = (UniqueConstraint("account_id", "phone_e164"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    phone_e164: Mapped[str] = mapped_column(String(16), index=True)
    label: Mapped[str | None] = mapped_column(String(100))


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("account_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    number: Mapped[str] = mapped_column(String(64))
    issue_date: Mapped[dt.date] = mapped_column(Date)
    due_date: Mapped[dt.date] = mapped_column(Date)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    open_cents: Mapped[int] = mapped_column(BigInteger)


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("account_id", "reference"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    date: Mapped[dt.date] = mapped_column(Date)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[str] = mapped_column(String(100))


CALL_DIRECTIONS = ("inbound", "outbound")
CALL_STATUSES = ("in_progress", "completed", "interrupted", "failed")
CALLS_BY_ACCOUNT = "ix_calls_account_direction_started"


class Call(Base):
    __tablename__ = "calls"
    # Outbound guardrails count an account's recent calls (voice/routing/guardrails.py).
    __table_args__ = (Index(CALLS_BY_ACCOUNT, "account_id", "direction", "started_at"),)

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


# Account numbers as the ERP exports them: letters, digits and inner separators
# (". _ -" and spaces, e.g. "A-100 7"), starting with a letter or digit; 64 = Account.number.
# The importer refuses others, so every account is reachable over the API.
ACCOUNT_NUMBER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 ._-]{0,62}[A-Za-z0-9._-])?")

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


SOFTPHONE_USERNAME = re.compile(r"[a-z0-9._-]{1,64}")


class Softphone(Base):
    """A collector's SIP softphone login. Only digests are kept, never the password: `ha1` is
    MD5(username:realm:password) and `ha1b` MD5(username@realm:realm:password), the forms
    Kamailio's auth_db checks with calculate_ha1 = 0. A new realm needs a new password."""

    __tablename__ = "softphones"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    realm: Mapped[str] = mapped_column(String(200))
    ha1: Mapped[str] = mapped_column(String(32))
    ha1b: Mapped[str] = mapped_column(String(32))
    collector_id: Mapped[int | None] = mapped_column(ForeignKey("collectors.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)

    collector: Mapped[Collector | None] = relationship(lazy="joined")

    @validates("username")
    def _check_username(self, _key: str, value: str) -> str:
        # The name reaches Kamailio's db_text files and a SIP header: a strict alphabet.
        if not SOFTPHONE_USERNAME.fullmatch(value):
            raise ValueError(f"softphone username {value!r}: use 1-64 of a-z 0-9 . _ -")
        return value


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


USER_ROLES = ("collector", "supervisor", "compliance", "admin")
USER_NAME = re.compile(r"[a-z0-9._-]{1,64}")


class User(Base):
    """Someone who uses the HTTP API. A collector user is linked to a `Collector` row and sees
    only that collector's accounts. Only the SHA-256 of the API token is kept; a disabled user
    has none, so the old token is dead for good (see accounts/users.py)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    collector_id: Mapped[int | None] = mapped_column(ForeignKey("collectors.id"))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    token_created_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())

    collector: Mapped[Collector | None] = relationship(lazy="joined")

    @validates("name")
    def _check_name(self, _key: str, value: str) -> str:
        # Names end up in notes (author) and the audit log: a strict alphabet.
        if not USER_NAME.fullmatch(value):
            raise ValueError(f"user name {value!r}: use 1-64 of a-z 0-9 . _ -")
        return value

    @validates("role")
    def _check_role(self, _key: str, value: str) -> str:
        if value not in USER_ROLES:
            raise ValueError(f"role {value!r}: one of {', '.join(USER_ROLES)}")
        return value


class AuditEntry(Base):
    """One access to something sensitive: who (name and role as they were then), when (UTC),
    from where, what they did to what. Append-only: no code path updates or deletes a row,
    the ORM refuses to flush a change (accounts/audit.py) and database triggers refuse
    UPDATE and DELETE from anything else."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # None: command line
    user_name: Mapped[str] = mapped_column(String(100), index=True)
    role: Mapped[str] = mapped_column(String(16))
    client_addr: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


_AUDIT_APPEND_ONLY = "audit_log is append-only"
for _ddl in (
    DDL(
        "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
        f"BEGIN SELECT RAISE(ABORT, '{_AUDIT_APPEND_ONLY}'); END"
    ).execute_if(dialect="sqlite"),
    DDL(
        "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
        f"BEGIN SELECT RAISE(ABORT, '{_AUDIT_APPEND_ONLY}'); END"
    ).execute_if(dialect="sqlite"),
    DDL(
        "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger "
        f"LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{_AUDIT_APPEND_ONLY}'; END $$"
    ).execute_if(dialect="postgresql"),
    DDL(
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
    ).execute_if(dialect="postgresql"),
    DDL(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    ).execute_if(dialect="postgresql"),
):
    event.listen(AuditEntry.__table__, "after_create", _ddl)


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
