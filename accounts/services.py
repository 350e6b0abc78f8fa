"""Read operations used by the IVR and the pages: account look-ups (balance, last invoice, last
payment).

Each method opens and closes its own session so callers never hold a database connection
(or a SQLite lock) across audio I/O.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from accounts.models import (
    Account,
    Contact,
    Customer,
    Invoice,
    Payment,
)
from accounts.phones import caller_e164
from accounts.views import (
    AccountSummary,
    Balance,
    InvoiceSummary,
    PaymentSummary,
    keyed_number,
)


class UnknownAccount(LookupError):
    pass


class UnknownCall(LookupError):
    pass


def _summary(account: Account, customer_name: str) -> AccountSummary:
    return AccountSummary(
        id=account.id,
        number=account.number,
        customer_name=customer_name,
        currency=account.currency,
        collector_id=account.collector_id,
    )


def currency_of(session: Session, account_id: int) -> str:
    """The account's currency; UnknownAccount when there is no such account."""
    currency = session.scalar(select(Account.currency).where(Account.id == account_id))
    if currency is None:
        raise UnknownAccount(f"no account with id {account_id}")
    return currency


class Ledger:
    def __init__(self, sessions: sessionmaker[Session], region: str = "US") -> None:
        self._sessions = sessions
        self._region = region

    def accounts_for_phone(self, raw: str | None) -> list[AccountSummary]:
        e164 = caller_e164(raw, self._region)
        if e164 is None:
            return []
        stmt = (
            select(Account, Customer.name)
            .join(Customer, Customer.id == Account.customer_id)
            .join(Contact, Contact.account_id == Account.id)
            .where(Contact.phone_e164 == e164)
            .order_by(Account.number)
        )
        with self._sessions() as session:
            return [_summary(account, name) for account, name in session.execute(stmt)]

    def account_by_number(self, number: str) -> AccountSummary | None:
        cleaned = keyed_number(number)
        if not cleaned:
            return None
        base = select(Account, Customer.name).join(Customer, Customer.id == Account.customer_id)
        with self._sessions() as session:
            row = session.execute(base.where(Account.number == cleaned)).first()
            if row is None:
                # Stored numbers may be formatted ("A-100 7") while callers key digits only;
                # compare without separators, but only accept an unambiguous match.
                stripped = func.replace(func.replace(Account.number, "-", ""), " ", "")
                rows = session.execute(base.where(stripped == cleaned).limit(2)).all()
                row = rows[0] if len(rows) == 1 else None
            return None if row is None else _summary(row[0], row[1])

    def balance(self, account_id: int, today: dt.date) -> Balance:
        past_due = case((Invoice.due_date < today, Invoice.open_cents), else_=0)
        stmt = select(
            func.coalesce(func.sum(Invoice.open_cents), 0),
            func.coalesce(func.sum(past_due), 0),
        ).where(Invoice.account_id == account_id)
        with self._sessions() as session:
            currency = currency_of(session, account_id)
            open_cents, past_due_cents = session.execute(stmt).one()
        return Balance(int(open_cents), int(past_due_cents), currency)

    def last_invoice(self, account_id: int) -> InvoiceSummary | None:
        stmt = (
            select(Invoice, Account.currency)
            .join(Account, Account.id == Invoice.account_id)
            .where(Invoice.account_id == account_id)
            .order_by(Invoice.issue_date.desc(), Invoice.id.desc())
            .limit(1)
        )
        with self._sessions() as session:
            row = session.execute(stmt).first()
        if row is None:
            return None
        invoice, currency = row
        return InvoiceSummary(
            number=invoice.number,
            issue_date=invoice.issue_date,
            due_date=invoice.due_date,
            amount_cents=invoice.amount_cents,
            open_cents=invoice.open_cents,
            currency=currency,
        )

    def last_payment(self, account_id: int) -> PaymentSummary | None:
        stmt = (
            select(Payment, Account.currency)
            .join(Account, Account.id == Payment.account_id)
            .where(Payment.account_id == account_id)
            .order_by(Payment.date.desc(), Payment.id.desc())
            .limit(1)
        )
        with self._sessions() as session:
            row = session.execute(stmt).first()
        if row is None:
            return None
        payment, currency = row
        return PaymentSummary(
            date=payment.date,
            amount_cents=payment.amount_cents,
            reference=payment.reference,
            currency=currency,
        )
