"""Call outcomes: what a collector marks a call as, the note that files it, the follow-ups due.

Kinds: reached, no_answer, left_message, promise_to_pay (amount in the account's currency and
a date, both required), dispute, follow_up (a date, required); any kind may carry a short text.
A call may be marked again (a correction): every marking is kept, the latest counts.

Each marking files an "outcome" note on the account through the ORM, so the note's webhook
delivery is queued with it (accounts/models.py) and the CRM hears of it like any other note.
The functions take the caller's open `Session`: the marking, its note and the caller's audit
row commit or roll back together.

Follow-ups: an account's pending date is its latest promise_to_pay or follow_up (of the calls'
latest markings), until a later marking on that account says the customer was reached or
disputes; no_answer and left_message leave it pending.

DTMF codes keyed on a softphone during or after a call (`parse_dtmf_outcome`), `#` ends one:

    *1#                     reached
    *2#                     no answer
    *3#                     left a message
    *4#                     dispute
    *5YYYYMMDD#             follow up on that date           *520261120#
    *6CENTS*YYYYMMDD#       promise to pay CENTS by the date  *6125000*20261120#
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from accounts.models import (
    OUTCOME_KINDS,
    RIGHT_PARTY_OUTCOMES,
    Account,
    Call,
    CallOutcome,
    Customer,
    Note,
    utcnow,
)
from accounts.money import money_text
from accounts.services import UnknownCall

DATED_KINDS = ("promise_to_pay", "follow_up")
CONTACT_KINDS = ("reached", "dispute")  # a later one of these settles a pending date
MAX_TEXT = 2000  # characters
MAX_AMOUNT_CENTS = 10**15 - 1  # 9,999,999,999,999.99: far beyond any invoice, inside BigInteger
MAX_DAYS_AHEAD = 366  # a promise or follow-up at most a year after the call
NOTE_KIND = "outcome"
DTMF_TERMINATOR = "#"
DTMF_KINDS = {
    "1": "reached",
    "2": "no_answer",
    "3": "left_message",
    "4": "dispute",
    "5": "follow_up",
    "6": "promise_to_pay",
}
_LABELS = {
    "reached": "reached the customer",
    "no_answer": "no answer",
    "left_message": "left a message",
    "promise_to_pay": "promise to pay",
    "dispute": "the customer disputes the debt",
    "follow_up": "follow up",
}
# Tab and newlines are text; other control characters are not (as in notes).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_DTMF = re.compile(r"\*([1-6])([0-9*]*)#")
_CENTS = re.compile(r"[1-9][0-9]{0,14}")
_YYYYMMDD = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")


class OutcomeError(ValueError):
    """A marking was refused; the message says which field and why."""


@dataclass(frozen=True)
class Marking:
    """One outcome as entered, checked on construction (OutcomeError if inconsistent).
    `date` is the promise date of promise_to_pay and the follow-up date of follow_up."""

    kind: str
    amount_cents: int | None = None
    date: dt.date | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in OUTCOME_KINDS:
            raise OutcomeError(f"kind must be one of {', '.join(OUTCOME_KINDS)}, got {self.kind!r}")
        if self.kind == "promise_to_pay":
            amount = self.amount_cents
            if amount is None:
                raise OutcomeError("promise_to_pay needs amount_cents (the promised amount)")
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise OutcomeError(f"amount_cents must be an integer, got {amount!r}")
            if not 1 <= amount <= MAX_AMOUNT_CENTS:
                raise OutcomeError(f"amount_cents must be from 1 to {MAX_AMOUNT_CENTS}")
        elif self.amount_cents is not None:
            raise OutcomeError(f"amount_cents is only for promise_to_pay, not {self.kind}")
        if self.kind in DATED_KINDS:
            what = "promised payment date" if self.kind == "promise_to_pay" else "follow-up date"
            if self.date is None:
                raise OutcomeError(f"{self.kind} needs a date (the {what})")
            if not isinstance(self.date, dt.date) or isinstance(self.date, dt.datetime):
                raise OutcomeError(f"date must be a date, got {self.date!r}")
        elif self.date is not None:
            raise OutcomeError(f"date is only for promise_to_pay and follow_up, not {self.kind}")
        if self.text is not None:
            if not isinstance(self.text, str):
                raise OutcomeError(f"text must be a string, got {self.text!r}")
            if len(self.text) > MAX_TEXT:
                raise OutcomeError(f"text longer than {MAX_TEXT} characters")
            if _CONTROL.search(self.text):
                raise OutcomeError("text contains control characters")
            if not self.text.strip():
                object.__setattr__(self, "text", None)  # an empty form field: no text


@dataclass(frozen=True)
class FollowUp:
    """A pending promise or follow-up on an account, from the marking that set it."""

    account_id: int
    account: str  # number
    customer: str
    collector_id: int | None  # the account's collector now
    kind: str  # promise_to_pay or follow_up
    due: dt.date
    amount_cents: int | None
    currency: str | None
    call_id: int
    outcome_id: int
    marked_by: str
    marked_at: dt.datetime


def mark_outcome(session: Session, call_id: int, marking: Marking, *, user: str) -> CallOutcome:
    """Store `marking` for the call and file its note on the call's account; returns the row
    (its `note_id` set). UnknownCall if there is no such call; OutcomeError if the call is not
    on an account or the date is before the call's day or more than a year after it."""
    call = session.get(Call, call_id)
    if call is None:
        raise UnknownCall(f"no call with id {call_id}")
    if call.account_id is None:
        raise OutcomeError(f"call {call_id} is not on an account: link it to one first")
    account = session.get(Account, call.account_id)
    assert account is not None  # a foreign key
    if marking.date is not None:
        call_day = call.started_at.astimezone(account_zone(account.timezone)).date()
        if marking.date < call_day:
            raise OutcomeError(f"date {marking.date} is before the call ({call_day})")
        if marking.date > call_day + dt.timedelta(days=MAX_DAYS_AHEAD):
            raise OutcomeError(f"date {marking.date} is more than {MAX_DAYS_AHEAD} days away")
    previous = latest_outcome(session, call_id)
    now = utcnow()
    promise = marking.kind == "promise_to_pay"
    note = Note(
        account_id=account.id,
        call_id=call_id,
        created_at=now,
        author=user,
        kind=NOTE_KIND,
        body=note_text(call_id, marking, account.currency, previous and previous.kind),
    )
    session.add(note)
    session.flush()
    outcome = CallOutcome(
        call_id=call_id,
        account_id=account.id,
        collector_id=account.collector_id,
        user=user,
        kind=marking.kind,
        amount_cents=marking.amount_cents,
        currency=account.currency if promise else None,
        promise_date=marking.date if promise else None,
        follow_up_date=marking.date if marking.kind == "follow_up" else None,
        text=marking.text,
        note_id=note.id,
        created_at=now,
    )
    session.add(outcome)
    session.flush()
    return outcome


def note_text(call_id: int, marking: Marking, currency: str, previous: str | None) -> str:
    """The outcome note: one line, plus the collector's text on the next."""
    what = _LABELS[marking.kind]
    if marking.kind == "promise_to_pay":
        assert marking.amount_cents is not None
        what += f" {money(marking.amount_cents, currency)} by {marking.date}"
    elif marking.kind == "follow_up":
        what += f" on {marking.date}"
    head = f"Outcome of call {call_id}"
    if previous is not None:
        head += f" corrected (was: {_LABELS.get(previous, previous)})"
    line = f"{head}: {what}."
    return f"{line}\n{marking.text}" if marking.text else line


def money(cents: int, currency: str) -> str:
    """1234567 USD -> "12,345.67 USD" (exact: no float)."""
    return money_text(cents, currency)


def account_zone(name: str) -> dt.tzinfo:
    """The account's IANA time zone; UTC if the name is unknown (the importer refuses those)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def latest_outcome(session: Session, call_id: int) -> CallOutcome | None:
    """The marking that counts for a call: the latest."""
    stmt = (
        select(CallOutcome)
        .where(CallOutcome.call_id == call_id)
        .order_by(CallOutcome.id.desc())
        .limit(1)
    )
    return session.scalar(stmt)


def last_conversation(
    session: Session, account_id: int, since: dt.datetime
) -> tuple[int, dt.datetime] | None:
    """(call id, start) of the account's latest outbound call started at or after `since` whose
    latest marking is a right-party contact; None if there is none."""
    latest = (
        select(func.max(CallOutcome.id))
        .where(CallOutcome.account_id == account_id)
        .group_by(CallOutcome.call_id)
    )
    stmt = (
        select(Call.id, Call.started_at)
        .join(CallOutcome, CallOutcome.call_id == Call.id)
        .where(
            CallOutcome.id.in_(latest),
            CallOutcome.kind.in_(RIGHT_PARTY_OUTCOMES),
            Call.direction == "outbound",
            Call.started_at >= since,
        )
        .order_by(Call.started_at.desc(), Call.id.desc())
        .limit(1)
    )
    row = session.execute(stmt).first()
    return None if row is None else (row[0], row[1])


def follow_ups_due(
    session: Session, on_or_before: dt.date, collector_id: int | None = None
) -> list[FollowUp]:
    """Pending promises and follow-ups dated on or before `on_or_before`, soonest first, one
    per account; only accounts now assigned to `collector_id` when it is given."""
    latest = select(func.max(CallOutcome.id)).group_by(CallOutcome.call_id)
    effective = select(CallOutcome).where(CallOutcome.id.in_(latest)).subquery()
    dated = (
        select(effective.c.account_id, func.max(effective.c.id).label("id"))
        .where(effective.c.kind.in_(DATED_KINDS))
        .group_by(effective.c.account_id)
        .subquery()
    )
    contact = (
        select(effective.c.account_id, func.max(effective.c.id).label("id"))
        .where(effective.c.kind.in_(CONTACT_KINDS))
        .group_by(effective.c.account_id)
        .subquery()
    )
    due = func.coalesce(CallOutcome.promise_date, CallOutcome.follow_up_date)
    stmt = (
        select(CallOutcome, Account.number, Customer.name, Account.collector_id)
        .join(dated, dated.c.id == CallOutcome.id)
        .join(Account, Account.id == CallOutcome.account_id)
        .join(Customer, Customer.id == Account.customer_id)
        .outerjoin(contact, contact.c.account_id == CallOutcome.account_id)
        .where(due <= on_or_before)
        .where((contact.c.id.is_(None)) | (contact.c.id < CallOutcome.id))
        .order_by(due, Account.number)
    )
    if collector_id is not None:
        stmt = stmt.where(Account.collector_id == collector_id)
    out = []
    for outcome, number, customer, collector in session.execute(stmt):
        due_date = outcome.promise_date or outcome.follow_up_date
        assert due_date is not None  # a dated kind
        out.append(
            FollowUp(
                account_id=outcome.account_id,
                account=number,
                customer=customer,
                collector_id=collector,
                kind=outcome.kind,
                due=due_date,
                amount_cents=outcome.amount_cents,
                currency=outcome.currency,
                call_id=outcome.call_id,
                outcome_id=outcome.id,
                marked_by=outcome.user,
                marked_at=outcome.created_at,
            )
        )
    return out


def parse_dtmf_outcome(keys: str) -> Marking:
    """The marking a softphone's DTMF code stands for (scheme in the module docstring)."""
    match = _DTMF.fullmatch(keys)
    if match is None:
        raise OutcomeError(f"outcome code {keys!r}: expected * then a kind 1-6, its fields, then #")
    kind = DTMF_KINDS[match[1]]
    fields = match[2]
    if kind in ("reached", "no_answer", "left_message", "dispute"):
        if fields:
            raise OutcomeError(f"outcome code {keys!r}: *{match[1]} takes nothing before #")
        return Marking(kind)
    if kind == "follow_up":
        return Marking(kind, date=_dtmf_date(keys, fields))
    cents, star, day = fields.partition("*")
    if not star or not _CENTS.fullmatch(cents):
        raise OutcomeError(f"outcome code {keys!r}: expected *6CENTS*YYYYMMDD#")
    return Marking(kind, amount_cents=int(cents), date=_dtmf_date(keys, day))


def _dtmf_date(keys: str, text: str) -> dt.date:
    match = _YYYYMMDD.fullmatch(text)
    try:
        if match is None:
            raise ValueError
        return dt.date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        raise OutcomeError(f"outcome code {keys!r}: {text!r} is not a date YYYYMMDD") from None
