"""Make a Call: a collector asks for a call to an account's customer; and how any call stands.

`POST /api/calls {"account": "10042", "to": "+12125550101"}` rings the collector's own phone
first (their softphone, else their configured SIP URI: accounts/reach.py `route_of`,
the same rule agent transfer uses); when they answer, a worker dials the
customer through the trunk with the configured caller ID and bridges the two. The number must
be one of the account's contacts (the API never dials a number typed in freely), and the
outbound guardrails (accounts/guardrails.py) must allow the call now: a refusal answers
409 (not now) or 403 (never to this number) with the rule, the reason and when calling becomes
allowed, and is audited as `call.refused`.

`GET /api/calls/{id}` is the call as it stands: status, times, and its progress events
(ringing the collector, dialling the customer, bridged, ...), for the page to poll.

Guardrails are checked here, before the worker is asked, and the allowed attempt is reserved in
the same transaction under the account's lock (`Guardrails.reserve`, accounts/attempts.py): of
requests racing for the last allowed attempt, one gets it and the others are refused. The
worker attaches the reservation to the call it journals; when the fleet could not take the call
the reservation is released.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accounts import attempts, audit
from accounts.guardrails import Guardrails, Refusal, record_refusal
from accounts.models import Account, Call, CallEvent, Contact
from accounts.phones import InvalidPhone, normalize
from accounts.reach import collector_route
from accounts.retry import DB_TRIES, retry_db
from accounts.users import Principal
from voice.api.auth import (
    client_addr,
    clock_of,
    config_of,
    requires,
    sessions_of,
)
from voice.api.calls import check_call_access
from voice.api.notes import READERS, iso, visible_account
from voice.api.openapi import documented, error_responses, id_param, json_body
from voice.api.params import int_id, read_json
from voice.config import Config
from voice.control import ControlError
from voice.fleet import uses_kamailio

DIALERS = ("collector",)  # the phone that rings first is the requester's own
PLACED = "call.place"  # audit action of an accepted request
# One try: with SQLite's 5 s busy timeout a second one took the answer past a client's 10 s
# (the soak's ReadTimeouts); a busy database is a 503 to retry in a few seconds instead.
PLAN_TRIES = 1
# The call's rows go behind it (the worker's write-behind), and a 202's status_url is read at
# once: the answer waits for them, within this much of the request (a client gives up at 10 s),
# and is sent anyway then: the status may then be 404 for a moment on a saturated database.
API_ANSWER_S = 8.0


class Refused(Exception):
    def __init__(self, body: dict[str, Any], status: int) -> None:
        super().__init__(body["reason"])
        self.body, self.status = body, status


@requires(*DIALERS)
@documented(
    requestBody=json_body(
        {
            "type": "object",
            "required": ["account"],
            "additionalProperties": False,
            "properties": {
                "account": {"type": "string", "description": "account number"},
                "to": {
                    "type": "string",
                    "description": "one of the account's contact numbers, any "
                    "spelling; default: its first contact",
                },
            },
        }
    ),
    responses={
        "202": {"description": "the collector's phone is ringing: `call_id`, `status_url`"},
        "403": {"description": "the destination is not allowed (`rule`, `reason`)"},
        "409": {"description": "not now: calling hours, attempts, quiet days (`allowed_from`)"},
        "503": {"description": "no call worker can take the call now"},
        **error_responses("404", "422"),
    },
)
async def place_call(request: Request, user: Principal) -> Response:
    """Ring my phone, then the account's customer, and bridge us (click-to-call)."""
    data = await read_json(request)
    unknown = set(data) - {"account", "to"}
    if unknown:
        raise HTTPException(422, f"unknown field(s): {', '.join(sorted(unknown))}")
    number, to = data.get("account"), data.get("to")
    if not isinstance(number, str) or not number:
        raise HTTPException(422, "account: expected an account number")
    if to is not None and not isinstance(to, str):
        raise HTTPException(422, "to: expected a phone number")
    try:
        placed = await place(request, user, number, to)
    except Refused as refused:
        return JSONResponse(refused.body, status_code=refused.status)
    call_id = placed.get("call_id")
    body = {"call_id": call_id, "status_url": f"/api/calls/{call_id}", **placed}
    return JSONResponse(body, status_code=202)


async def place(
    request: Request,
    user: Principal,
    number: str,
    to: str | None,
    answer_within: float | None = None,
) -> dict[str, Any]:
    """Make a Call for `user`, the API's POST /api/calls and the pages' button alike: what the
    fleet answered (`call_id`, `worker`). Raises `Refused` (404, or a guardrail's 403/409,
    with the JSON body) or HTTPException (422 bad number or no phone, 503 no worker).
    Answers once the call's row is in, or `answer_within` s (API_ANSWER_S) after the start."""
    cfg = config_of(request)
    guard = Guardrails(cfg.guardrails, sessions_of(request), clock_of(request))
    args = (sessions_of(request), guard, user, client_addr(request), number, to)
    # The reservation's transaction may meet a busy database (SQLite's lock): PLAN_TRIES,
    # then 503 (database_busy), never a 500.
    deadline = time.monotonic() + (API_ANSWER_S if answer_within is None else answer_within)
    plan = await retry_db(PLAN_TRIES, _plan, *args, cfg)
    fleet = getattr(request.app.state, "fleet", None)
    try:
        if fleet is None:
            raise LookupError("no call workers behind this API")
        placed = await fleet.click_to_call(caller_id=cfg.guardrails.caller_id, **plan)
    except Exception as exc:
        # A worker that answered too late still attaches the attempt, which then counts again.
        reason = f"not placed: {type(exc).__name__}: {exc}"
        await retry_db(DB_TRIES, attempts.release, sessions_of(request), plan["attempt"], reason)
        if isinstance(exc, LookupError | RuntimeError | ControlError):
            # No worker free, or the one asked refused or did not answer in time.
            raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
        raise
    wait = max(0.5, deadline - time.monotonic())
    await call_visible(sessions_of(request), placed["call_id"], wait)
    return placed


async def call_visible(sessions: sessionmaker[Session], call_id: int, timeout: float) -> bool:
    """Wait (up to `timeout`) until the call's row and its account are in: what reading it
    (GET /api/calls/{id}, the call's page) checks access by."""

    def linked() -> bool:
        with sessions() as session:
            return session.scalar(select(Call.account_id).where(Call.id == call_id)) is not None

    deadline = time.monotonic() + timeout
    while not await run_in_threadpool(linked):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


def _plan(
    sessions: sessionmaker[Session],
    guard: Guardrails,
    user: Principal,
    addr: str | None,
    number: str,
    to: str | None,
    cfg: Config,
) -> dict[str, Any]:
    """Who rings first and whom they reach, once every check passed and the attempt is reserved.

    Refusals raise only after the transaction that audited them has committed.
    """
    refused: Refused | None = None
    with sessions.begin() as session:
        account = visible_account(session, user, addr, number)  # audits a denial
        if account is None:
            refused = Refused({"error": "not found", "reason": f"no account {number}"}, 404)
        else:
            collector = _line(session, user, cfg)
            customer = _contact(session, account, to, cfg.accounts.default_region)
            reserved = guard.reserve(session, account.id, customer, f"api:{user.name}")
            if isinstance(reserved, Refusal):
                record_refusal(session, user, addr, number, customer, reserved)
                body = {"error": "refused", "to": customer, **reserved.as_dict()}
                refused = Refused(body, reserved.status)
            else:
                audit.record(session, user, addr, PLACED, "account", number, {"to": customer})
    if refused is not None:
        raise refused
    return {
        "collector": collector,
        "customer": customer,
        "account_id": account.id,
        "user": user.name,
        "attempt": reserved,
    }


def _line(session: Session, user: Principal, cfg: Config) -> int:
    """The requesting collector's id, once they have a phone the worker can ring first."""
    if user.collector_id is None:
        raise HTTPException(422, f"user {user.name} is not a collector: no phone to ring first")
    # Active or not, as before: an inactive collector's call is refused by the worker (503).
    route = collector_route(
        session,
        user.collector_id,
        realm=cfg.kamailio.realm,
        proxy=uses_kamailio(cfg),
        active_only=False,
    )
    if route is None:
        raise HTTPException(422, "no softphone and no reachable SIP URI for this collector")
    return route.collector_id


def _contact(session: Session, account: Account, to: str | None, region: str) -> str:
    numbers = list(
        session.scalars(
            select(Contact.phone_e164).where(Contact.account_id == account.id).order_by(Contact.id)
        )
    )
    if to is None:
        if not numbers:
            raise HTTPException(422, f"account {account.number} has no contact number")
        return numbers[0]
    try:
        e164 = normalize(to, region)
    except InvalidPhone as exc:
        raise HTTPException(422, f"to: {exc}") from None
    if e164 not in numbers:
        raise HTTPException(422, f"to: {e164} is not a contact number of account {account.number}")
    return e164


@requires(*READERS)
@documented(
    parameters=[id_param("call_id")],
    responses={
        "200": {
            "description": "direction, status, parties, times, end reason, and every "
            "progress event so far (`events`: at, kind, detail)"
        },
        **error_responses("404"),
    },
)
async def call_status(request: Request, user: Principal) -> Response:
    """How a call stands: in progress (and at which step) or how it ended."""
    call_id = int_id(request, "call_id")
    args = (sessions_of(request), user, client_addr(request), call_id)
    return JSONResponse(await run_in_threadpool(_status, *args))


def _status(
    sessions: sessionmaker[Session], user: Principal, addr: str | None, call_id: int
) -> dict[str, Any]:
    check_call_access(sessions, user, addr, call_id, "call.read", require_live=False)
    return call_state(sessions, call_id)


def call_state(sessions: sessionmaker[Session], call_id: int) -> dict[str, Any]:
    """GET /api/calls/{id}'s body, for a caller that checked access already (the live page
    polls it for its event stream and audits the read once)."""
    with sessions() as session:
        call = session.get(Call, call_id)
        assert call is not None  # checked above; calls are never deleted
        account = session.get(Account, call.account_id) if call.account_id else None
        events = session.scalars(
            select(CallEvent).where(CallEvent.call_id == call_id).order_by(CallEvent.seq)
        )
        return {
            "id": call.id,
            "direction": call.direction,
            "status": call.status,
            "account": account.number if account else None,
            "caller": call.caller,
            "callee": call.callee,
            "started_at": iso(call.started_at),
            "answered_at": iso(call.answered_at),
            "ended_at": iso(call.ended_at),
            "end_reason": call.end_reason,
            "events": [{"at": iso(e.at), "kind": e.kind, **e.detail} for e in events],
        }


ROUTES = [
    Route("/calls", place_call, methods=["POST"]),
    Route("/calls/{call_id}", call_status, methods=["GET"]),
]
