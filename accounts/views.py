"""Read-only views of account data handed to the IVR. Plain values, no database session attached."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_NUMBER_SEPARATORS = re.compile(r"[\s\-]+")


def keyed_number(number: str) -> str:
    """An account number as a caller keys it: stored numbers may be formatted ("A-100 7")."""
    return _NUMBER_SEPARATORS.sub("", number)


@dataclass(frozen=True)
class AccountSummary:
    id: int
    number: str
    customer_name: str
    currency: str
    collector_id: int | None


@dataclass(frozen=True)
class Balance:
    open_cents: int
    past_due_cents: int
    currency: str


@dataclass(frozen=True)
class InvoiceSummary:
    number: str
    issue_date: dt.date
    due_date: dt.date
    amount_cents: int
    open_cents: int
    currency: str


@dataclass(frozen=True)
class PaymentSummary:
    date: dt.date
    amount_cents: int
    reference: str
    currency: str
