"""The outcome form of the live call page: its fields to a `Marking`, errors per field.

The form speaks people's terms (an amount like 500.00, a date picker); what it builds is the
API's `Marking` and it is stored by the API's `mark_call` (voice/api/outcomes.py), so a page
marking and an API marking are the same row, note and audit entry.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request

from accounts.models import OUTCOME_KINDS
from accounts.outcomes import DATED_KINDS, Marking, OutcomeError
from accounts.users import Principal
from voice.api.auth import client_addr, sessions_of
from voice.api.outcomes import mark_call
from voice.api.params import int_id

EMPTY = {"kind": "", "amount": "", "date": "", "text": ""}
_AMOUNT = re.compile(r"(\d{1,13})(?:\.(\d{1,2}))?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class Posted:
    kind: str = ""
    errors: dict[str, str] = field(default_factory=dict)


async def outcome_post(request: Request, user: Principal, form: FormData) -> Posted:
    """Mark the call in the path from the posted form; errors keyed by field, nothing saved
    then. A call that is not the user's raises 404, as the API answers."""
    marking, errors = parse(form)
    if marking is None:
        return Posted(errors=errors)
    call_id = int_id(request, "call_id")
    args = (sessions_of(request), user, client_addr(request), call_id, marking)
    try:
        stored = await run_in_threadpool(mark_call, *args)
    except HTTPException as exc:  # 422: e.g. a follow-up dated before the call
        return Posted(errors={_field_of(str(exc.detail)): str(exc.detail)})
    if stored is None:
        raise HTTPException(404, f"no call {call_id}")
    return Posted(kind=marking.kind)


def parse(form: FormData) -> tuple[Marking | None, dict[str, str]]:
    kind = str(form.get("kind", ""))
    errors: dict[str, str] = {}
    if kind not in OUTCOME_KINDS:
        return None, {"kind": "Choose how the call ended."}
    amount = None
    if kind == "promise_to_pay":
        amount = _cents(str(form.get("amount", "")).strip().replace(",", ""), errors)
    date = None
    if kind in DATED_KINDS:
        date = _date(str(form.get("date", "")).strip(), errors)
    if errors:
        return None, errors
    try:
        return Marking(kind, amount, date, str(form.get("text", "")) or None), {}
    except OutcomeError as exc:
        return None, {_field_of(str(exc)): str(exc)}


def _cents(text: str, errors: dict[str, str]) -> int | None:
    match = _AMOUNT.fullmatch(text)
    if not text:
        errors["amount"] = "Enter the promised amount, like 500.00."
    elif match is None:
        errors["amount"] = f"{text!r} is not an amount: use digits, like 500.00."
    else:
        return int(match[1]) * 100 + int((match[2] or "0").ljust(2, "0"))
    return None


def _date(text: str, errors: dict[str, str]) -> dt.date | None:
    if not text:
        errors["date"] = "Enter the date (YYYY-MM-DD)."
        return None
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        return dt.date.fromisoformat(text)
    except ValueError:
        errors["date"] = f"{text!r} is not a date: use YYYY-MM-DD."
        return None


def _field_of(message: str) -> str:
    for name in ("amount", "date", "text"):
        if name in message:
            return name
    return "kind"
