"""`/accounts/{number}`: everything needed before calling, and the add-note form.

The notes timeline is the API's own read (voice/api/notes.py `account_notes`: the same
access rule, another collector's account is 404, the same `notes.list` audit row), newest
first, each call note with its actions, recordings (playable in place through
/recordings/{id}/audio) and transcript. The balance is the IVR's (accounts/services.py
`Ledger.balance`); the contacts' callable state is the guardrails' (voice/pages/callable.py).
A note is added by the API's `add_manual_note` after the API's `note_body` checks, so page
and API notes are the same.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from accounts.models import Account, CallOutcome, Invoice, Payment
from accounts.outcomes import DATED_KINDS
from accounts.services import Ledger
from accounts.users import Principal
from voice.api.auth import client_addr, clock_of, config_of, sessions_of
from voice.api.dialout import DIALERS
from voice.api.notes import READERS, WRITERS, account_notes, add_manual_note, note_body
from voice.api.params import account_number
from voice.pages.callable import contact_states, guardrails
from voice.pages.web import page, read_form, render, see_other

NOTES_PAGE = 50
HISTORY = 20  # payments and promises shown


@page(*READERS)
async def account_page(request: Request, user: Principal) -> Response:
    return await _show(request, user)


async def _show(
    request: Request,
    user: Principal,
    status: int = 200,
    draft: str = "",
    errors: dict[str, str] | None = None,
) -> Response:
    number = account_number(request)
    before = request.query_params.get("before")
    before_id = int(before) if before and before.isdigit() and len(before) < 19 else None
    args = (sessions_of(request), user, client_addr(request), number, NOTES_PAGE, before_id)
    notes = await run_in_threadpool(account_notes, *args)
    if notes is None:
        raise HTTPException(404, f"no account {number}")
    day = clock_of(request)().astimezone().date()
    facts = await run_in_threadpool(_facts, request, number, day)
    ctx = {
        **facts,
        "notes": notes,
        "next_before": notes[-1]["id"] if len(notes) == NOTES_PAGE else None,
        "can_write": user.role in WRITERS,
        "can_call": user.role in DIALERS,
        "draft": draft,
        "errors": errors or {},
        "today": day,
    }
    return render(request, user, "account.html", status=status, **ctx)


def _facts(request: Request, number: str, day: dt.date) -> dict[str, Any]:
    """The account's standing; access was checked (and audited) by the notes read."""
    sessions = sessions_of(request)
    ledger = Ledger(sessions, config_of(request).accounts.default_region)
    with sessions() as session:
        account = session.scalar(select(Account).where(Account.number == number))
        assert account is not None  # the notes read found it
        states = contact_states(session, guardrails(request), [account.id])[account.id]
        invoices = list(
            session.scalars(
                select(Invoice)
                .where(Invoice.account_id == account.id, Invoice.open_cents > 0)
                .order_by(Invoice.due_date, Invoice.id)
            )
        )
        payments = list(
            session.scalars(
                select(Payment)
                .where(Payment.account_id == account.id)
                .order_by(Payment.date.desc(), Payment.id.desc())
                .limit(HISTORY)
            )
        )
        promises = list(
            session.scalars(
                select(CallOutcome)
                .where(
                    CallOutcome.account_id == account.id,
                    CallOutcome.kind.in_(DATED_KINDS),
                )
                .order_by(CallOutcome.id.desc())
                .limit(HISTORY)
            )
        )
    return {
        "account": account,
        "balance": ledger.balance(account.id, day),
        "contacts": states,
        "invoices": invoices,
        "payments": payments,
        "promises": promises,
    }


@page(*WRITERS)
async def add_note(request: Request, user: Principal) -> Response:
    number = account_number(request)
    form = await read_form(request)
    text = str(form.get("body", ""))
    try:
        body = note_body({"body": text})
    except HTTPException as exc:
        message = str(exc.detail).replace("body", "The note", 1)
        return await _show(request, user, 422, draft=text, errors={"body": message})
    args = (sessions_of(request), user, client_addr(request), number, body)
    note = await run_in_threadpool(add_manual_note, *args)
    if note is None:
        raise HTTPException(404, f"no account {number}")
    return see_other(f"/accounts/{number}#note-{note['id']}")


ROUTES: list[BaseRoute] = [
    Route("/accounts/{number}", account_page, methods=["GET"]),
    Route("/accounts/{number}/notes", add_note, methods=["POST"]),
]
