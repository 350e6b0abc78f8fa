"""Whom to call now, in order: the collector's worklist behind `/today`.

`order(standings)` is THE ordering, a pure function (tests/unit/test_pages_worklist.py):

1. Promises to pay that are due today or broken (dated on or before today and still pending:
   no later call on the account was marked reached or dispute), the longest-overdue first,
   then the larger promise first.
2. Follow-ups due (dated on or before today, still pending), the longest-overdue first.
3. Everything else by past-due amount weighted by days past due: the sum over the account's
   open, past-due invoices of `open amount x days since the due date` (so 1,000.00 sixty
   days late outranks 1,500.00 ten days late), the heaviest first; accounts with nothing
   past due last.

Ties, in every group, go by account number, so the order is total and stable between page
loads. "Pending" is accounts/outcomes.py `follow_ups_due`'s rule, not a second copy of it.

`standings(session, collector_id, today)` reads what `order` needs for every account of a
collector (or all) in two grouped queries; the page orders them, cuts out one page, and only
then asks the slower questions (contacts' callable state, last contact) for those rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Date, case, func, literal, select
from sqlalchemy.orm import Session

from accounts.models import Account, Call, CallOutcome, Customer, Invoice
from accounts.outcomes import FollowUp, follow_ups_due

PROMISE, FOLLOW_UP, REST = 0, 1, 2  # the groups, in order


@dataclass(frozen=True)
class Standing:
    """What the order needs to know about one account."""

    account_id: int
    number: str
    customer: str
    currency: str
    past_due_cents: int
    weight: int  # sum of open cents x days past due, over the open past-due invoices
    oldest_due: dt.date | None  # due date of the oldest open invoice
    pending: FollowUp | None = None  # a promise or follow-up due on or before today

    @property
    def group(self) -> int:
        if self.pending is None:
            return REST
        return PROMISE if self.pending.kind == "promise_to_pay" else FOLLOW_UP


def priority(s: Standing) -> tuple[int, int, int, str]:
    """The sort key: group, then within it most urgent first, then account number."""
    if s.pending is not None and s.group != REST:
        amount = s.pending.amount_cents or 0
        return (s.group, s.pending.due.toordinal(), -amount, s.number)
    return (REST, -s.weight, -s.past_due_cents, s.number)


def order(standings: Iterable[Standing]) -> list[Standing]:
    """The worklist order (module docstring): promises due or broken, follow-ups due, then
    the rest by past-due amount weighted by days past due."""
    return sorted(standings, key=priority)


def standings(session: Session, collector_id: int | None, today: dt.date) -> list[Standing]:
    """Every account of `collector_id` (None: all accounts), with what `order` needs."""
    open_past_due = (Invoice.open_cents > 0) & (Invoice.due_date < today)
    days = _days_since(session, Invoice.due_date, today)
    accounts = select(Account.id)
    if collector_id is not None:
        accounts = accounts.where(Account.collector_id == collector_id)
    invoices = (
        select(
            Invoice.account_id.label("account_id"),
            func.sum(case((open_past_due, Invoice.open_cents), else_=0)).label("past_due"),
            func.sum(case((open_past_due, Invoice.open_cents * days), else_=0)).label("weight"),
            func.min(case((Invoice.open_cents > 0, Invoice.due_date))).label("oldest"),
        )
        .where(Invoice.account_id.in_(accounts))
        .group_by(Invoice.account_id)
        .subquery()
    )
    stmt = (
        select(
            Account.id,
            Account.number,
            Customer.name,
            Account.currency,
            invoices.c.past_due,
            invoices.c.weight,
            invoices.c.oldest,
        )
        .join(Customer, Customer.id == Account.customer_id)
        .outerjoin(invoices, invoices.c.account_id == Account.id)
    )
    if collector_id is not None:
        stmt = stmt.where(Account.collector_id == collector_id)
    pending = {f.account_id: f for f in follow_ups_due(session, today, collector_id)}
    out = []
    for account_id, number, customer, currency, past_due, weight, oldest in session.execute(stmt):
        if isinstance(oldest, str):  # SQLite hands back MIN() of a CASE as text
            oldest = dt.date.fromisoformat(oldest)
        out.append(
            Standing(
                account_id=account_id,
                number=number,
                customer=customer,
                currency=currency,
                past_due_cents=int(past_due or 0),
                weight=int(weight or 0),
                oldest_due=oldest,
                pending=pending.get(account_id),
            )
        )
    return out


def _days_since(session: Session, column: Any, today: dt.date) -> Any:
    """Whole days from a date column to `today`, in SQL (each backend spells it its way)."""
    if session.get_bind().dialect.name == "sqlite":
        # Both are dates, so the difference is a whole number of days (as a float).
        return func.julianday(today.isoformat()) - func.julianday(column)
    return literal(today, Date()) - column


@dataclass(frozen=True)
class LastContact:
    call_id: int
    at: dt.datetime
    direction: str
    status: str
    outcome: str | None  # the call's latest marking, if any


def last_contacts(session: Session, account_ids: list[int]) -> dict[int, LastContact]:
    """Each account's latest call and how it was marked (the accounts on one page)."""
    if not account_ids:
        return {}
    latest = (
        select(func.max(Call.id)).where(Call.account_id.in_(account_ids)).group_by(Call.account_id)
    )
    calls = list(session.scalars(select(Call).where(Call.id.in_(latest))))
    marked = (
        select(func.max(CallOutcome.id))
        .where(CallOutcome.call_id.in_([c.id for c in calls]))
        .group_by(CallOutcome.call_id)
    )
    stmt = select(CallOutcome.call_id, CallOutcome.kind).where(CallOutcome.id.in_(marked))
    kinds = {call_id: kind for call_id, kind in session.execute(stmt)}
    return {
        c.account_id: LastContact(c.id, c.started_at, c.direction, c.status, kinds.get(c.id))
        for c in calls
        if c.account_id is not None
    }
