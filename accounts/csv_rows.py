"""Reading an AR-system CSV export for the importer (accounts/importer.py): UTF-8 text, the
header against the kind's columns, then one `Row` per record whose accessors check a value
(length, money, date) and record a problem with its line number instead of raising."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from accounts.models import Account, Collector, Contact, Customer, Invoice, Payment

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


class Row:
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


def read_rows(path: Path, kind: str, errors: list[RowError]) -> list[Row]:
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
        rows.append(Row(line, values, required, errors))
    return rows
