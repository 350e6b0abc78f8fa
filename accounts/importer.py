"""CSV import of accounts, contacts, invoices and payments exported from the AR system.

A file is checked completely before anything is written, and every problem is reported with
its line number, so an operator can fix the whole file in one pass. Writes are all-or-nothing:
re-running a corrected file is safe because rows are upserted on their natural keys.

Reading the file is accounts/csv_rows.py, checking its rows accounts/import_checks.py; here
they are written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accounts.csv_rows import COLUMNS, CsvImportError, Row, RowError, read_rows
from accounts.import_checks import (
    AccountRow,
    Checker,
    ContactRow,
    InvoiceRow,
    PaymentRow,
    check_account,
    check_contact,
    check_invoice,
    check_payment,
)
from accounts.models import Account, Collector, Contact, Customer, Invoice, Payment
from accounts.verification import set_value

__all__ = ["COLUMNS", "CsvImportError", "RowError", "import_csv"]


def _get_or_create_customer(session: Session, name: str) -> Customer:
    customer = session.scalars(
        select(Customer).where(Customer.name == name).order_by(Customer.id).limit(1)
    ).first()
    if customer is None:
        customer = Customer(name=name)
        session.add(customer)
        session.flush()
    return customer


def _get_or_create_collector(session: Session, name: str) -> Collector:
    collector = session.scalars(select(Collector).where(Collector.name == name)).first()
    if collector is None:
        collector = Collector(name=name, active=True)
        session.add(collector)
        session.flush()
    return collector


def _write_account(session: Session, row: AccountRow) -> None:
    account = session.scalars(select(Account).where(Account.number == row.number)).first()
    customer = _get_or_create_customer(session, row.customer_name)
    if account is None:
        account = Account(number=row.number, customer_id=customer.id)
        session.add(account)
    account.customer_id = customer.id
    if row.currency is not None:
        account.currency = row.currency
    if row.timezone is not None:
        account.timezone = row.timezone
    if row.collector is not None:
        account.collector_id = _get_or_create_collector(session, row.collector).id
    session.flush()
    for kind, value in row.verifiers.items():
        set_value(session, account.id, kind, value)


def _write_contact(session: Session, row: ContactRow) -> None:
    contact = session.scalars(
        select(Contact).where(Contact.account_id == row.account_id, Contact.phone_e164 == row.phone)
    ).first()
    if contact is None:
        session.add(Contact(account_id=row.account_id, phone_e164=row.phone, label=row.label))
    elif row.label is not None:
        contact.label = row.label


def _write_invoice(session: Session, row: InvoiceRow) -> None:
    invoice = session.scalars(
        select(Invoice).where(Invoice.account_id == row.account_id, Invoice.number == row.number)
    ).first()
    if invoice is None:
        invoice = Invoice(account_id=row.account_id, number=row.number)
        session.add(invoice)
    invoice.issue_date = row.issue_date
    invoice.due_date = row.due_date
    invoice.amount_cents = row.amount_cents
    invoice.open_cents = row.open_cents


def _write_payment(session: Session, row: PaymentRow) -> None:
    payment = session.scalars(
        select(Payment).where(
            Payment.account_id == row.account_id, Payment.reference == row.reference
        )
    ).first()
    if payment is None:
        payment = Payment(account_id=row.account_id, reference=row.reference)
        session.add(payment)
    payment.date = row.date
    payment.amount_cents = row.amount_cents


_HANDLERS: dict[str, tuple[Callable[[Checker, Row], Any], Callable[[Session, Any], None]]] = {
    "accounts": (check_account, _write_account),
    "contacts": (check_contact, _write_contact),
    "invoices": (check_invoice, _write_invoice),
    "payments": (check_payment, _write_payment),
}


def import_csv(sessions: sessionmaker[Session], kind: str, path: Path, region: str = "US") -> int:
    """Import one CSV file of `kind`; returns the number of rows written.

    Raises CsvImportError listing every problem found, in which case nothing is written.
    """
    if kind not in _HANDLERS:
        raise ValueError(f"kind must be one of {', '.join(_HANDLERS)}, got {kind!r}")
    check, write = _HANDLERS[kind]
    errors: list[RowError] = []
    rows = read_rows(path, kind, errors)
    # Checking and writing share one transaction so the accounts seen while checking are
    # the ones written against.
    with sessions() as session, session.begin():
        checker = Checker(session, region)
        valid = [check(checker, row) for row in rows]
        if errors:
            errors.sort(key=lambda error: error.line)
            raise CsvImportError(path, errors)
        for record in valid:
            write(session, record)
    return len(valid)
