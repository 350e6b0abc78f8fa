"""Find recordings by account, phone number, collector, date, direction and words said.

Who asks decides what can be found: a `Scope` is required on every query, and a collector's
scope only reaches recordings of calls on accounts assigned to them. A recording outside the
scope is reported exactly like one that does not exist.

Words are matched in the call's transcript rows through the text index (accounts/textindex.py:
SQLite FTS5, PostgreSQL full-text with a GIN index): whole words, case-insensitive, every word
somewhere in the call, not necessarily in one utterance. A "word" is a run of letters or digits,
so "invoice_number" is the two words invoice and number, and "100%" is 100.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import phonenumbers
from sqlalchemy import ColumnElement, Select, and_, false, or_, select
from sqlalchemy.orm import Session, sessionmaker

from accounts import textindex
from accounts.models import (
    CALL_DIRECTIONS,
    Account,
    Call,
    Collector,
    Customer,
    Recording,
    Transcript,
)
from accounts.phones import normalize
from recordings.verify import RecordingNotFound

MAX_LIMIT = 500
MAX_WORDS = 10
MAX_WORD_LENGTH = 64


class SearchError(ValueError):
    """A search parameter is invalid; the message names it."""


@dataclass(frozen=True)
class Scope:
    """Which recordings the asker may see: all of them, or one collector's accounts'."""

    everything: bool
    collector_id: int | None = None

    @classmethod
    def all(cls) -> Scope:
        return cls(everything=True)

    @classmethod
    def collector(cls, collector_id: int | None) -> Scope:
        # A collector login not linked to a collector record sees nothing.
        return cls(everything=False, collector_id=collector_id)


@dataclass(frozen=True)
class RecordingFilter:
    account: str | None = None  # account number, exact
    phone: str | None = None  # caller or callee, any spelling of the number
    collector: str | None = None  # collector id (digits) or exact name
    start: dt.datetime | None = None  # recording started at or after
    end: dt.datetime | None = None  # ... and before
    direction: str | None = None  # inbound | outbound
    words: str | None = None  # words said on the call
    oldest_first: bool = False  # newest first unless asked
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class RecordingInfo:
    id: int
    call_id: int
    kind: str
    status: str
    format: str
    sample_rate: int
    channels: int
    started_at: dt.datetime
    finalized_at: dt.datetime | None
    duration_s: float | None
    bytes: int | None
    sha256: str | None
    pauses: list[dict[str, float]]
    loss: str | None
    retain_until: dt.datetime | None
    legal_hold: bool
    deleted_at: dt.datetime | None
    direction: str
    caller: str | None
    callee: str | None
    account_number: str | None
    customer: str | None
    collector_id: int | None
    collector: str | None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, dt.datetime) else value
        return out


def phone_spellings(raw: str, region: str = "US") -> list[str]:
    """The ways a number may have been stored off the wire: +E.164, without '+', national,
    with the trunk prefix, with 00/011. Raises accounts.phones.InvalidPhone."""
    e164 = normalize(raw, region)
    number = phonenumbers.parse(e164)
    national = str(number.national_number)
    region_of_number = phonenumbers.region_code_for_number(number)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region_of_number)
    spellings = [e164, e164[1:], national, "00" + e164[1:], "011" + e164[1:]]
    if metadata is not None and metadata.national_prefix:
        spellings.append(metadata.national_prefix + national)
    return list(dict.fromkeys(spellings))


def _said(dialect: str, term: str) -> ColumnElement[bool]:
    calls = select(Transcript.call_id).where(textindex.said_in(dialect, term))
    return Recording.call_id.in_(calls)  # on the recording: no join to calls needed


def _words(text: str) -> list[str]:
    words = textindex.terms(text)
    if not words:
        raise SearchError("q: no word to search for (words are letters or digits)")
    if len(words) > MAX_WORDS:
        raise SearchError(f"q: at most {MAX_WORDS} words")
    if any(len(w) > MAX_WORD_LENGTH for w in words):
        raise SearchError(f"q: words of at most {MAX_WORD_LENGTH} characters")
    return list(dict.fromkeys(words))


def _base() -> Select[Any]:
    return (
        select(Recording, Call, Account.number, Customer.name, Account.collector_id, Collector.name)
        .join(Call, Call.id == Recording.call_id)
        .outerjoin(Account, Account.id == Call.account_id)
        .outerjoin(Customer, Customer.id == Account.customer_id)
        .outerjoin(Collector, Collector.id == Account.collector_id)
    )


def _page_from(flt: RecordingFilter, scope: Scope) -> Select[Any]:
    """The ids of one page, joined only to the tables its filters and scope name.

    A page's ids are found first and its rows fetched for those ids alone: a narrow query
    walks the date index (or the text index's matches) and stops at the page, instead of
    joining calls, accounts and collectors for every row it passes (at 1,000,000 recordings
    on PostgreSQL a transcript word's first page went from ~120 ms to ~75 ms this way).
    Keep in step with _conditions: a filter on a column of calls, accounts or collectors needs
    its join here."""
    needs_account = flt.account is not None or flt.collector is not None or not scope.everything
    needs_call = needs_account or flt.phone is not None or flt.direction is not None
    stmt = _scoped(select(Recording.id).select_from(Recording), scope)
    if needs_call:
        stmt = stmt.join(Call, Call.id == Recording.call_id)
    if needs_account:
        stmt = stmt.join(Account, Account.id == Call.account_id)
    if flt.collector is not None and not flt.collector.strip().isdigit():
        stmt = stmt.join(Collector, Collector.id == Account.collector_id)
    return stmt


def _ordered(stmt: Select[Any], oldest_first: bool) -> Select[Any]:
    if oldest_first:
        return stmt.order_by(Recording.started_at, Recording.id)
    return stmt.order_by(Recording.started_at.desc(), Recording.id.desc())


def _scoped(stmt: Select[Any], scope: Scope) -> Select[Any]:
    if scope.everything:
        return stmt
    if scope.collector_id is None:
        return stmt.where(false())
    return stmt.where(Account.collector_id == scope.collector_id)


def _conditions(flt: RecordingFilter, region: str, dialect: str) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if flt.account is not None:
        where.append(Account.number == flt.account.strip())
    if flt.phone is not None:
        try:
            spellings = phone_spellings(flt.phone, region)
        except ValueError as exc:  # InvalidPhone
            raise SearchError(f"phone: {exc}") from None
        where.append(or_(Call.caller.in_(spellings), Call.callee.in_(spellings)))
    if flt.collector is not None:
        who = flt.collector.strip()
        where.append(Account.collector_id == int(who) if who.isdigit() else Collector.name == who)
    if flt.start is not None:
        where.append(Recording.started_at >= _aware("from", flt.start))
    if flt.end is not None:
        where.append(Recording.started_at < _aware("to", flt.end))
    if flt.direction is not None:
        if flt.direction not in CALL_DIRECTIONS:
            raise SearchError(f"direction: expected one of {', '.join(CALL_DIRECTIONS)}")
        where.append(Call.direction == flt.direction)
    if flt.words:
        where.extend(_said(dialect, word) for word in _words(flt.words))
    return where


def _aware(name: str, value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise SearchError(f"{name}: naive datetime, pass a timezone-aware value")
    return value


def _info(row: Any) -> RecordingInfo:
    rec, call, number, customer, collector_id, collector = row
    return RecordingInfo(
        id=rec.id,
        call_id=rec.call_id,
        kind=rec.kind,
        status=rec.status,
        format=rec.format,
        sample_rate=rec.sample_rate,
        channels=rec.channels,
        started_at=rec.started_at,
        finalized_at=rec.finalized_at,
        duration_s=rec.duration_s,
        bytes=rec.bytes,
        sha256=rec.sha256,
        pauses=list(rec.pauses or []),
        loss=rec.loss,
        retain_until=rec.retain_until,
        legal_hold=rec.legal_hold,
        deleted_at=rec.deleted_at,
        direction=call.direction,
        caller=call.caller,
        callee=call.callee,
        account_number=number,
        customer=customer,
        collector_id=collector_id,
        collector=collector,
    )


def utterances(
    sessions: sessionmaker[Session], call_id: int, recording_id: int
) -> list[dict[str, Any]]:
    """What was said in one recording of a call, in time order (Transcript.as_dict rows).

    Times are seconds into the recording an utterance was stored with, so a bridged part's
    page shows its own; rows stored without one (older rows) are shown with every recording."""
    stmt = (
        select(Transcript)
        .where(
            Transcript.call_id == call_id,
            or_(Transcript.recording_id == recording_id, Transcript.recording_id.is_(None)),
        )
        .order_by(Transcript.start_s, Transcript.id)
    )
    with sessions() as session:
        return [row.as_dict() for row in session.scalars(stmt)]


class RecordingSearch:
    def __init__(self, sessions: sessionmaker[Session], region: str = "US") -> None:
        self._sessions = sessions
        self._region = region

    def search(self, flt: RecordingFilter, scope: Scope) -> list[RecordingInfo]:
        """Matching recordings, newest (or oldest) first."""
        if not 1 <= flt.limit <= MAX_LIMIT:
            raise SearchError(f"limit: expected 1..{MAX_LIMIT}")
        if flt.offset < 0:
            raise SearchError("offset: expected 0 or more")
        dialect = self._sessions.kw["bind"].dialect.name
        where = _conditions(flt, self._region, dialect)
        page = _ordered(_page_from(flt, scope).where(and_(True, *where)), flt.oldest_first)
        page = page.limit(flt.limit).offset(flt.offset)
        stmt = _ordered(_base().where(Recording.id.in_(page)), flt.oldest_first)
        with self._sessions() as session:
            return [_info(row) for row in session.execute(stmt)]

    def check(self, flt: RecordingFilter) -> None:
        """Raise SearchError for a bad filter value, as search() would, without querying."""
        _conditions(flt, self._region, self._sessions.kw["bind"].dialect.name)

    def get(self, recording_id: int, scope: Scope) -> RecordingInfo:
        """One recording, or RecordingNotFound (also when it is outside `scope`)."""
        stmt = _scoped(_base(), scope).where(Recording.id == recording_id)
        with self._sessions() as session:
            row = session.execute(stmt).first()
        if row is None:
            raise RecordingNotFound(f"no recording {recording_id}")
        return _info(row)
