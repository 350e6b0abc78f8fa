"""CSV import of accounts, contacts, invoices and payments exported from the AR system.

A file is checked completely before anything is written, and every problem is reported with
its line number, so an operator can fix the whole file in one pass. Writes are all-or-nothing:
re-running a corrected file is safe because rows are upserted on their natural keys.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accounts.models import (
    ACCOUNT_NUMBER,
    Account,
    Collector,
    Contact,
    Customer,
    Invoice,
    Payment,
)
from accounts.phones import InvalidPhone, normalize
from accounts.verification import (
    VerifierValueError,
    date_of_birth_on_file,
    postal_code_on_file,
    set_value,
)

# kind -> (required columns, optional columns)
COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "accounts": (
        ("account_number", "customer_name"),
        ("currency", "timezone", "collector", "postal_code", "date_of_birth"),
    ),
    "contacts": (("account_number", "phone"), ("label",)),
    "invoices": (
        ("account_number", "invoice_number", "issue_date", "due_date", "amount"),
        ("open_amount",),
    ),
    "payments": (("account_number", "date", "amount", "reference"), ()),
}

_MONEY = re.compile(r"^(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$")
_MAX_CENTS = 2**63 - 1  # BIGINT
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")


@dataclass(frozen=True)
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class CsvImportError(Exception):
    def __init__(self, path: Path, errors: list[RowError]) -> None:
        self.path = path
        self.errors = errors
        lines = "\n".join(str(error) for error in errors)
        super().__init__(f"{path}: {len(errors)} problem(s), nothing imported\n{lines}")


def _max_length(column: Any) -> int:
    return int(column.type.length)


# CSV column -> longest value its database column holds. PostgreSQL refuses a longer value
# (SQLite stores it), so it is a row error on every backend rather than a crash on one.
_MAX_LENGTH = {
    "account_number": _max_length(Account.number),
    "customer_name": _max_length(Customer.name),
    "timezone": _max_length(Account.timezone),
    "collector": _max_length(Collector.name),
    "label": _max_length(Contact.label),
    "invoice_number": _max_length(Invoice.number),
    "reference": _max_length(Payment.reference),
}


class _Row:
    """One data row; accessors return None and record an error when a value is unusable."""

    def __init__(
        self, line: int, values: dict[str, str], required: tuple[str, ...], errors: list[RowError]
    ) -> None:
        self.line = line
        self.values = values
        self._required = required
        self._errors = errors
        self.ok = True

    def fail(self, message: str) -> None:
        self.ok = False
        self._errors.append(RowError(self.line, message))

    def text(self, column: str) -> str | None:
        """Value of a column, None when blank or absent (blank required columns are errors)."""
        value = self.values.get(column, "")
        limit = _MAX_LENGTH.get(column)
        if limit is not None and len(value) > limit:
            self.fail(f"{column} is longer than {limit} characters")
            return None
        if value:
            return value
        if column in self._required:
            self.fail(f"{column} is empty")
        return None

    def money(self, column: str) -> int | None:
        raw = self.text(column)
        if raw is None:
            return None
        if raw.startswith("-"):
            self.fail(f"negative {column} {raw!r}")
            return None
        if not _MONEY.match(raw):
            self.fail(f"invalid {column} {raw!r}: expected a number like 1234.56 or 1,234.56")
            return None
        try:
            value = Decimal(raw.replace(",", ""))
        except InvalidOperation:  # pragma: no cover - the pattern above already excludes it
            self.fail(f"invalid {column} {raw!r}")
            return None
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent < -2:
            self.fail(f"invalid {column} {raw!r}: more than 2 decimal places")
            return None
        if value * 100 > _MAX_CENTS:
            self.fail(f"{column} {raw!r} is too large")
            return None
        return int(value * 100)

    def date(self, column: str) -> dt.date | None:
        raw = self.text(column)
        if raw is None:
            return None
        if _ISO_DATE.match(raw):
            try:
                return dt.date.fromisoformat(raw)
            except ValueError:
                pass
        self.fail(f"invalid {column} {raw!r}: expected a date as YYYY-MM-DD")
        return None


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise CsvImportError(
            path, [RowError(line, f"not UTF-8 text (byte 0x{bad}); save the file as UTF-8 CSV")]
        ) from None
    if not text.strip():
        raise CsvImportError(path, [RowError(1, "file is empty; expected a header row")])
    if "\x00" in text:
        # Databases store no NUL in text (PostgreSQL refuses it); often a UTF-16 export.
        line = text.count("\n", 0, text.index("\x00")) + 1
        message = "contains NUL bytes (0x00): is it UTF-16? save the file as UTF-8 CSV"
        raise CsvImportError(path, [RowError(line, message)])
    return text


def _records(path: Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each CSV record; quoted fields may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    previous = 0
    try:
        for fields in reader:
            yield previous + 1, fields
            previous = reader.line_num
    except csv.Error as exc:
        error = RowError(reader.line_num, f"CSV syntax error: {exc}")
        raise CsvImportError(path, [error]) from None


def _read_rows(path: Path, kind: str, errors: list[RowError]) -> list[_Row]:
    required, optional = COLUMNS[kind]
    records = _records(path, _decode(path))
    header_line, header_fields = next(records)
    header = [name.strip().lower() for name in header_fields]

    unknown = [name for name in header if name not in required + optional]
    missing = [name for name in required if name not in header]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    problems = []
    if unknown:
        problems.append(f"unknown column(s) {', '.join(map(repr, unknown))}")
    if missing:
        problems.append(f"missing required column(s) {', '.join(map(repr, missing))}")
    if duplicated:
        problems.append(f"repeated column(s) {', '.join(map(repr, duplicated))}")
    if problems:
        expected = ", ".join(required) + "".join(f", [{name}]" for name in optional)
        message = "; ".join(problems) + f" (columns for {kind}: {expected})"
        raise CsvImportError(path, [RowError(header_line, message)])

    rows = []
    for line, fields in records:
        if not any(field.strip() for field in fields):
            continue  # blank lines, often trailing, are not rows
        if len(fields) != len(header):
            errors.append(RowError(line, f"expected {len(header)} fields, found {len(fields)}"))
            continue
        values = {name: field.strip() for name, field in zip(header, fields, strict=True)}
        rows.append(_Row(line, values, required, errors))
    return rows


# Validated rows, ready to write. Optional values left blank are None: keep what is stored.


@dataclass(frozen=True)
class _AccountRow:
    number: str
    customer_name: str
    currency: str | None
    timezone: str | None
    collector: str | None
    # Right-party verification values in stored form (accounts/verification.py), hashed on write.
    verifiers: dict[str, str]


@dataclass(frozen=True)
class _ContactRow:
    account_id: int
    phone: str
    label: str | None


@dataclass(frozen=True)
class _InvoiceRow:
    account_id: int
    number: str
    issue_date: dt.date
    due_date: dt.date
    amount_cents: int
    open_cents: int


@dataclass(frozen=True)
class _PaymentRow:
    account_id: int
    date: dt.date
    amount_cents: int
    reference: str


class _Checker:
    """Per-file state for row validation: known accounts and keys already seen in the file."""

    def __init__(self, session: Session, region: str) -> None:
        self.region = region
        self.accounts: dict[str, int] = {
            number: account_id
            for number, account_id in session.execute(select(Account.number, Account.id))
        }
        self._seen: dict[Any, int] = {}

    def account_id(self, row: _Row) -> int | None:
        number = row.text("account_number")
        if number is None:
            return None
        if number not in self.accounts:
            row.fail(f"unknown account {number!r}")
            return None
        return self.accounts[number]

    def first_time(self, row: _Row, key: Any, what: str) -> bool:
        first = self._seen.setdefault(key, row.line)
        if first != row.line:
            row.fail(f"duplicate {what} (first on line {first})")
            return False
        return True


def _check_account(checker: _Checker, row: _Row) -> _AccountRow | None:
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
    return _AccountRow(number, customer_name, currency, timezone, row.text("collector"), verifiers)


def _verifiers(checker: _Checker, row: _Row) -> dict[str, str]:
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


def _check_contact(checker: _Checker, row: _Row) -> _ContactRow | None:
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
    return _ContactRow(account_id, phone, row.text("label"))


def _check_invoice(checker: _Checker, row: _Row) -> _InvoiceRow | None:
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
    return _InvoiceRow(account_id, number, issue_date, due_date, amount, open_amount)


def _check_payment(checker: _Checker, row: _Row) -> _PaymentRow | None:
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
    return _PaymentRow(account_id, date, amount, reference)


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


def _write_account(session: Session, row: _AccountRow) -> None:
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


def _write_contact(session: Session, row: _ContactRow) -> None:
    contact = session.scalars(
        select(Contact).where(Contact.account_id == row.account_id, Contact.phone_e164 == row.phone)
    ).first()
    if contact is None:
        session.add(Contact(account_id=row.account_id, phone_e164=row.phone, label=row.label))
    elif row.label is not None:
        contact.label = row.label


def _write_invoice(session: Session, row: _InvoiceRow) -> None:
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


def _write_payment(session: Session, row: _PaymentRow) -> None:
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


_HANDLERS: dict[str, tuple[Callable[[_Checker, _Row], Any], Callable[[Session, Any], None]]] = {
    "accounts": (_check_account, _write_account),
    "contacts": (_check_contact, _write_contact),
    "invoices": (_check_invoice, _write_invoice),
    "payments": (_check_payment, _write_payment),
}


def import_csv(sessions: sessionmaker[Session], kind: str, path: Path, region: str = "US") -> int:
    """Import one CSV file of `kind`; returns the number of rows written.

    Raises CsvImportError listing every problem found, in which case nothing is written.
    """
    if kind not in _HANDLERS:
        raise ValueError(f"kind must be one of {', '.join(_HANDLERS)}, got {kind!r}")
    check, write = _HANDLERS[kind]
    errors: list[RowError] = []
    rows = _read_rows(path, kind, errors)
    # Checking and writing share one transaction so the accounts seen while checking are
    # the ones written against.
    with sessions() as session, session.begin():
        checker = _Checker(session, region)
        valid = [check(checker, row) for row in rows]
        if errors:
            errors.sort(key=lambda error: error.line)
            raise CsvImportError(path, errors)
        for record in valid:
            write(session, record)
    return len(valid)
