"""Checking the importer's rows (accounts/importer.py) into typed records ready to write:
known accounts, valid values, no key twice in one file; every problem recorded on its row."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from accounts.csv_rows import Row
from accounts.models import ACCOUNT_NUMBER, Account
from accounts.phones import InvalidPhone, normalize
from accounts.verification import VerifierValueError, date_of_birth_on_file, postal_code_on_file

_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


# Validated rows, ready to write. Optional values left blank are None: keep what is stored.


@dataclass(frozen=True)
class AccountRow:
    number: str
    customer_name: str
    currency: str | None
    timezone: str | None
    collector: str | None
    # Right-party verification values in stored form (accounts/verification.py), hashed on write.
    verifiers: dict[str, str]


@dataclass(frozen=True)
class ContactRow:
    account_id: int
    phone: str
    label: str | None


@dataclass(frozen=True)
class InvoiceRow:
    account_id: int
    number: str
    issue_date: dt.date
    due_date: dt.date
    amount_cents: int
    open_cents: int


@dataclass(frozen=True)
class PaymentRow:
    account_id: int
    date: dt.date
    amount_cents: int
    reference: str


class Checker:
    """Per-file state for row validation: known accounts and keys already seen in the file."""

    def __init__(self, session: Session, region: str) -> None:
        self.region = region
        self.accounts: dict[str, int] = {
            number: account_id
            for number, account_id in session.execute(select(Account.number, Account.id))
        }
        self._seen: dict[Any, int] = {}

    def account_id(self, row: Row) -> int | None:
        number = row.text("account_number")
        if number is None:
            return None
        if number not in self.accounts:
            row.fail(f"unknown account {number!r}")
            return None
        return self.accounts[number]

    def first_time(self, row: Row, key: Any, what: str) -> bool:
        first = self._seen.setdefault(key, row.line)
        if first != row.line:
            row.fail(f"duplicate {what} (first on line {first})")
            return False
        return True


def check_account(checker: Checker, row: Row) -> AccountRow | None:
    number = row.text("account_number")
    if number is not None and not ACCOUNT_NUMBER.fullmatch(number):
        row.fail(
            f"invalid account number {number!r}: letters, digits and inner . _ - or spaces, "
            "starting with a letter or digit"
        )
    customer_name = row.text("customer_name")
    currency = row.text("currency")
    if currency is not None:
        if _CURRENCY.match(currency):
            currency = currency.upper()
        else:
            row.fail(f"invalid currency {currency!r}: expected a 3-letter code like USD")
    timezone = row.text("timezone")
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            row.fail(f"unknown timezone {timezone!r}: expected a name like America/Chicago")
    if number is not None:
        checker.first_time(row, ("account", number), f"account {number!r}")
    verifiers = _verifiers(checker, row)
    if not row.ok or number is None or customer_name is None:
        return None
    return AccountRow(number, customer_name, currency, timezone, row.text("collector"), verifiers)


def _verifiers(checker: Checker, row: Row) -> dict[str, str]:
    """The optional postal_code / date_of_birth columns, checked: a blank one leaves the value
    on file as it is (an export without the column must not erase it)."""
    found: dict[str, str] = {}
    readers = {
        "postal_code": lambda raw: postal_code_on_file(raw, checker.region),
        "date_of_birth": date_of_birth_on_file,
    }
    for column, read in readers.items():
        raw = row.values.get(column, "").strip()
        if not raw:
            continue
        try:
            found[column] = read(raw)
        except VerifierValueError as exc:
            row.fail(str(exc))
    return found


def check_contact(checker: Checker, row: Row) -> ContactRow | None:
    account_id = checker.account_id(row)
    raw_phone = row.text("phone")
    phone = None
    if raw_phone is not None:
        try:
            phone = normalize(raw_phone, checker.region)
        except InvalidPhone as exc:
            row.fail(str(exc))
    if account_id is not None and phone is not None:
        checker.first_time(row, ("contact", account_id, phone), f"contact {phone}")
    if not row.ok or account_id is None or phone is None:
        return None
    return ContactRow(account_id, phone, row.text("label"))


def check_invoice(checker: Checker, row: Row) -> InvoiceRow | None:
    account_id = checker.account_id(row)
    number = row.text("invoice_number")
    issue_date = row.date("issue_date")
    due_date = row.date("due_date")
    amount = row.money("amount")
    open_amount = row.money("open_amount") if row.values.get("open_amount") else amount
    if issue_date and due_date and due_date < issue_date:
        row.fail(f"due_date {due_date} is before issue_date {issue_date}")
    if amount is not None and open_amount is not None and open_amount > amount:
        shown = row.values["open_amount"], row.values["amount"]
        row.fail("open_amount {!r} is more than amount {!r}".format(*shown))
    if account_id is not None and number is not None:
        checker.first_time(row, ("invoice", account_id, number), f"invoice {number!r}")
    if (
        not row.ok
        or account_id is None
        or number is None
        or issue_date is None
        or due_date is None
        or amount is None
        or open_amount is None
    ):
        return None
    return InvoiceRow(account_id, number, issue_date, due_date, amount, open_amount)


def check_payment(checker: Checker, row: Row) -> PaymentRow | None:
    account_id = checker.account_id(row)
    date = row.date("date")
    amount = row.money("amount")
    reference = row.text("reference")
    if amount == 0:
        row.fail("payment amount is zero")
    if account_id is not None and reference is not None:
        checker.first_time(row, ("payment", account_id, reference), f"reference {reference!r}")
    if not row.ok or account_id is None or date is None or amount is None or reference is None:
        return None
    return PaymentRow(account_id, date, amount, reference)
