"""Collections rules over HTTP: mark a call's outcome, list follow-ups due, ask whether an
account may be called now (the Make-a-Call button).

Collectors reach only their own accounts' calls and follow-ups (another collector's call is
404, as if it did not exist); supervisors and administrators reach all. Compliance reads the
outcome notes through the notes API. Every access and refusal is an audit row.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accounts import audit
from accounts.guardrails import Guardrails
from accounts.models import OUTCOME_KINDS, Account, Call, CallOutcome
from accounts.outcomes import (
    MAX_TEXT,
    FollowUp,
    Marking,
    OutcomeError,
    follow_ups_due,
    mark_outcome,
)
from accounts.phones import InvalidPhone, normalize
from accounts.users import Principal
from voice.api.auth import (
    client_addr,
    clock_of,
    config_of,
    deny,
    requires,
    sees_account,
    sessions_of,
)
from voice.api.notes import visible_account
from voice.api.openapi import documented, error_responses, id_param, json_body, query_param
from voice.api.params import account_number, int_id, int_query, query, read_json

CALLERS = ("collector", "supervisor", "admin")  # who places calls and marks them
_FIELDS = ("kind", "amount_cents", "date", "text")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_STRING = {"type": "string"}
_OUTCOME_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "call_id": {"type": "integer"},
        "account": {"type": "string"},
        "kind": {"type": "string"},
        "amount_cents": {"type": ["integer", "null"]},
        "currency": {"type": ["string", "null"]},
        "date": {"type": ["string", "null"], "format": "date"},
        "text": {"type": ["string", "null"]},
        "user": {"type": "string"},
        "note_id": {"type": ["integer", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
    },
}


# -- outcome ------------------------------------------------------------------------------


@requires(*CALLERS)
@documented(
    parameters=[id_param("call_id")],
    requestBody=json_body(
        {
            "type": "object",
            "required": ["kind"],
            "additionalProperties": False,
            "properties": {
                "kind": {"enum": list(OUTCOME_KINDS)},
                "amount_cents": {
                    "type": "integer",
                    "description": "promise_to_pay: the amount, in the account's currency",
                },
                "date": {
                    "type": "string",
                    "format": "date",
                    "description": "promise_to_pay: by when; follow_up: when (required)",
                },
                "text": {"type": "string", "maxLength": MAX_TEXT},
            },
        }
    ),
    responses={
        "201": {
            "description": "the stored outcome (an outcome note is filed on the account)",
            "content": {"application/json": {"schema": _OUTCOME_SCHEMA}},
        },
        **error_responses("404", "422"),
    },
)
async def mark_call_outcome(request: Request, user: Principal) -> Response:
    """Mark how a call went.

    A call may be marked again: every marking is kept, the latest counts. Collectors: only
    calls on accounts assigned to them (404 otherwise)."""
    call_id = int_id(request, "call_id")
    marking = _marking(await read_json(request))
    args = (sessions_of(request), user, client_addr(request), call_id, marking)
    outcome = await run_in_threadpool(mark_call, *args)
    if outcome is None:
        raise HTTPException(404, f"no call {call_id}")
    return JSONResponse(outcome, status_code=201)


def _marking(data: dict[str, Any]) -> Marking:
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise HTTPException(422, f"unknown field(s) {unknown}; known: {list(_FIELDS)}")
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise HTTPException(422, "kind is required: reached, no_answer, left_message, ...")
    date = data.get("date")
    if date is not None:
        try:
            if not isinstance(date, str) or not _DATE.fullmatch(date):
                raise ValueError
            date = dt.date.fromisoformat(date)
        except ValueError:
            raise HTTPException(422, f"date must be YYYY-MM-DD, got {date!r}") from None
    try:
        return Marking(kind, data.get("amount_cents"), date, data.get("text"))
    except OutcomeError as exc:
        raise HTTPException(422, str(exc)) from None


def mark_call(
    sessions: sessionmaker[Session], user: Principal, addr: str | None, call_id: int, m: Marking
) -> dict[str, Any] | None:
    """Mark the call for `user` (the API's POST /api/calls/{id}/outcome and the live page's):
    the stored outcome, or None (audited) when the call is not theirs to see."""
    with sessions.begin() as session:
        call = session.get(Call, call_id)
        account = session.get(Account, call.account_id) if call and call.account_id else None
        if call is None or not sees_account(user, account.collector_id if account else None):
            deny(session, user, addr, "call", call_id, "no such call for this user")
            return None
        try:
            outcome = mark_outcome(session, call_id, m, user=user.name)
        except OutcomeError as exc:
            raise HTTPException(422, str(exc)) from None
        assert account is not None  # mark_outcome refuses a call without one
        detail = {"account": account.number, "kind": m.kind, "outcome_id": outcome.id}
        audit.record(session, user, addr, "call.outcome", "call", call_id, detail)
        return outcome_dict(outcome, account.number)


def outcome_dict(outcome: CallOutcome, account: str) -> dict[str, Any]:
    date = outcome.promise_date or outcome.follow_up_date
    return {
        "id": outcome.id,
        "call_id": outcome.call_id,
        "account": account,
        "kind": outcome.kind,
        "amount_cents": outcome.amount_cents,
        "currency": outcome.currency,
        "date": date.isoformat() if date else None,
        "text": outcome.text,
        "user": outcome.user,
        "note_id": outcome.note_id,
        "created_at": outcome.created_at.isoformat(),
    }


# -- follow-ups ---------------------------------------------------------------------------


@requires(*CALLERS)
@documented(
    parameters=[
        query_param("due", "due on or before this date, YYYY-MM-DD (default: today)", _STRING),
        query_param("collector", "only accounts of this collector (id)", {"type": "integer"}),
    ],
    responses={
        "200": {"description": "one pending promise or follow-up per account, soonest first"},
        **error_responses("422"),
    },
)
async def list_followups(request: Request, user: Principal) -> Response:
    """Promises to pay and follow-ups due.

    An account's latest promise or follow-up stays pending until a later call on it is marked
    reached or dispute. Collectors: only their own accounts (another collector: none)."""
    params = query(request, ("due", "collector"))
    due_text = params.get("due")
    if due_text is None:
        due = clock_of(request)().astimezone().date()  # today where the server is
    else:
        try:
            if not _DATE.fullmatch(due_text):
                raise ValueError
            due = dt.date.fromisoformat(due_text)
        except ValueError:
            raise HTTPException(422, f"due must be YYYY-MM-DD, got {due_text!r}") from None
    collector = int_query(params, "collector", None, 1, 2**63 - 1)
    args = (sessions_of(request), user, client_addr(request), due, collector)
    found = await run_in_threadpool(_followups, *args)
    return JSONResponse({"due": due.isoformat(), "collector": collector, "followups": found})


def _followups(
    sessions: sessionmaker[Session],
    user: Principal,
    addr: str | None,
    due: dt.date,
    collector: int | None,
) -> list[dict[str, Any]]:
    with sessions.begin() as session:
        if user.role == "collector" and (
            user.collector_id is None or collector not in (None, user.collector_id)
        ):
            found = []
        elif user.role == "collector":
            found = follow_ups_due(session, due, user.collector_id)
        else:
            found = follow_ups_due(session, due, collector)
        detail = {
            "due": due.isoformat(),
            "collector": collector,
            "count": len(found),
            "accounts": [f.account for f in found],
        }
        audit.record(session, user, addr, "followups.list", "followup", None, detail)
    return [_followup_dict(f) for f in found]


def _followup_dict(f: FollowUp) -> dict[str, Any]:
    return {
        "account": f.account,
        "customer": f.customer,
        "collector_id": f.collector_id,
        "kind": f.kind,
        "due": f.due.isoformat(),
        "amount_cents": f.amount_cents,
        "currency": f.currency,
        "call_id": f.call_id,
        "outcome_id": f.outcome_id,
        "marked_by": f.marked_by,
        "marked_at": f.marked_at.isoformat(),
    }


# -- may this account be called now? ------------------------------------------------------


@requires(*CALLERS)
@documented(
    parameters=[
        query_param(
            "to",
            "the number to dial, any spelling (normalised to E.164; without it, only the "
            "account's rules are checked)",
            _STRING,
        )
    ],
    responses={
        "200": {
            "description": "`allowed`; if not, the `rule`, the `status` placing the call "
            "would get (409 not now, 403 never to this number), the `reason` and "
            "`allowed_from`"
        },
        **error_responses("404", "422"),
    },
)
async def check_callable(request: Request, user: Principal) -> Response:
    """May this account be called now (outbound guardrails)?

    Calling hours in the account's time zone, attempts per week, quiet days after a
    conversation, allowed destinations. Collectors: only their own accounts (404 otherwise)."""
    number = account_number(request)
    params = query(request, ("to",))
    cfg = config_of(request)
    to = None
    if "to" in params:
        raw = params["to"]
        # An unencoded "+" in a query string arrives as a space.
        raw = "+" + raw.lstrip() if raw.startswith(" ") else raw
        try:
            to = normalize(raw, cfg.accounts.default_region)
        except InvalidPhone as exc:
            raise HTTPException(422, f"to: {exc}") from None
    guard = Guardrails(cfg.guardrails, sessions_of(request), clock_of(request))
    args = (sessions_of(request), guard, user, client_addr(request), number, to)
    answer = await run_in_threadpool(_callable, *args)
    if answer is None:
        raise HTTPException(404, f"no account {number}")
    return JSONResponse(answer)


def _callable(
    sessions: sessionmaker[Session],
    guard: Guardrails,
    user: Principal,
    addr: str | None,
    number: str,
    to: str | None,
) -> dict[str, Any] | None:
    with sessions.begin() as session:
        account = visible_account(session, user, addr, number)
        if account is None:
            return None
        refusal = (
            guard.check(account.id, to, session) if to else guard.check_account(account.id, session)
        )
        answer: dict[str, Any] = {"account": number, "to": to, "allowed": refusal is None}
        answer.update(
            refusal.as_dict()
            if refusal
            else {"rule": None, "status": None, "reason": None, "allowed_from": None}
        )
        detail = {"to": to, "allowed": refusal is None, "rule": refusal and refusal.rule}
        audit.record(session, user, addr, "account.callable", "account", number, detail)
    return answer


ROUTES = [
    Route("/calls/{call_id}/outcome", mark_call_outcome, methods=["POST"]),
    Route("/followups", list_followups, methods=["GET"]),
    Route("/accounts/{number}/callable", check_callable, methods=["GET"]),
]
