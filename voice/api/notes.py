"""The notes store over HTTP: read an account's notes, read one, add a manual note.

Collectors reach only the accounts assigned to them; anything else is 404, as if it did not
exist. Compliance reads but never writes. Every read and write, and every refusal, is a row
in the audit log, committed with the access itself: if it cannot be written, the access fails.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import Select, false, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accounts import audit
from accounts.models import Account, Call, CallEvent, Note, Recording, Transcript
from accounts.users import Principal
from voice.api.auth import client_addr, deny, requires, sees_account, sessions_of
from voice.api.openapi import documented, error_responses, id_param, json_body, query_param
from voice.api.params import account_number, int_id, int_query, query, read_json

ACTION_EVENTS = (
    "identified",
    "keys",
    "speech",
    "choice",
    "no_input",
    "invalid_choice",
    "not_understood",
    "agent",
    "said",
)
READERS = ("collector", "supervisor", "compliance", "admin")
WRITERS = ("collector", "supervisor", "admin")
MAX_BODY = 10_000  # characters
MAX_PAGE = 1000
# Tab and newlines are text; other control characters (NUL above all: PostgreSQL refuses it
# in text) are not.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

_NOTE_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "account": {"type": "string"},
        "call_id": {"type": ["integer", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "author": {"type": "string"},
        "kind": {
            "type": "string",
            "description": "manual; call (written by the IVR); outcome (a collector marked the "
            "call); voicemail (a message left for the collector)",
        },
        "body": {"type": "string"},
        "call": {
            "type": ["object", "null"],
            "description": "call notes: parties, times, actions, recordings (with links and "
            "hashes) and the transcript as it stands when read",
        },
    },
}


def note_dict(note: Note, account: str, session: Session | None = None) -> dict[str, Any]:
    out = {
        "id": note.id,
        "account": account,
        "call_id": note.call_id,
        "created_at": note.created_at.isoformat(),
        "author": note.author,
        "kind": note.kind,
        "body": note.body,
    }
    if session is not None and note.call_id is not None:
        out["call"] = call_detail(session, note.call_id)
    return out


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def call_detail(session: Session, call_id: int) -> dict[str, Any] | None:
    """What a call note carries beyond its text: parties, times, the caller's actions, the
    recording (link, hash, losses, PCI gaps) and the transcript, read now, so a transcript
    finished after the note was written is attached as soon as it exists."""
    call = session.get(Call, call_id)
    if call is None:
        return None
    actions = session.scalars(
        select(CallEvent)
        .where(CallEvent.call_id == call_id, CallEvent.kind.in_(ACTION_EVENTS))
        .order_by(CallEvent.seq)
    )
    recordings = session.scalars(
        select(Recording).where(Recording.call_id == call_id).order_by(Recording.id)
    )
    return {
        "direction": call.direction,
        "caller": call.caller,
        "callee": call.callee,
        "status": call.status,
        "end_reason": call.end_reason,
        "started_at": iso(call.started_at),
        "answered_at": iso(call.answered_at),
        "ended_at": iso(call.ended_at),
        "actions": [{"at": iso(e.at), "kind": e.kind, **e.detail} for e in actions],
        "recordings": [
            {
                "id": r.id,
                "url": f"/api/recordings/{r.id}/audio",
                "status": r.status,
                "duration_s": r.duration_s,
                "sha256": r.sha256,
                "loss": r.loss,
                "pauses": r.pauses or [],
            }
            for r in recordings
        ],
        "transcript": Transcript.of_call(session, call_id),
    }


def visible_account(
    session: Session, user: Principal, addr: str | None, number: str
) -> Account | None:
    """The account if `user` may see it; otherwise the refusal is recorded and None returned."""
    account = session.scalar(select(Account).where(Account.number == number))
    if account is None:
        deny(session, user, addr, "account", number, "no such account")
        return None
    if not sees_account(user, account.collector_id):
        deny(session, user, addr, "account", number, "account not assigned to this collector")
        return None
    return account


@requires(*READERS)
@documented(
    parameters=[
        query_param("limit", "at most this many notes (default 100)", {"type": "integer"}),
        query_param("before", "only notes with a smaller id (next page)", {"type": "integer"}),
    ],
    responses={
        "200": {"description": "newest first; `next_before` pages on (null: no more)"},
        **error_responses("404", "422"),
    },
)
async def list_notes(request: Request, user: Principal) -> Response:
    """The notes on an account, newest first.

    Collectors: only accounts assigned to them (404 otherwise)."""
    number = account_number(request)
    params = query(request, ("limit", "before"))
    limit = int_query(params, "limit", 100, 1, MAX_PAGE)
    before = int_query(params, "before", None, 1, 2**63 - 1)
    args = (sessions_of(request), user, client_addr(request), number, limit, before)
    notes = await run_in_threadpool(account_notes, *args)
    if notes is None:
        raise HTTPException(404, f"no account {number}")
    next_before = notes[-1]["id"] if len(notes) == limit else None
    return JSONResponse({"account": number, "notes": notes, "next_before": next_before})


def account_notes(
    sessions: sessionmaker[Session],
    user: Principal,
    addr: str | None,
    number: str,
    limit: int,
    before: int | None,
) -> list[dict[str, Any]] | None:
    with sessions.begin() as session:
        account = visible_account(session, user, addr, number)
        if account is None:
            return None
        stmt = select(Note).where(Note.account_id == account.id).order_by(Note.id.desc())
        if before is not None:
            stmt = stmt.where(Note.id < before)
        notes = [note_dict(n, number, session) for n in session.scalars(stmt.limit(limit))]
        detail = {"count": len(notes), "ids": [n["id"] for n in notes]}
        audit.record(session, user, addr, "notes.list", "account", number, detail)
    return notes


@requires(*READERS)
@documented(
    parameters=[
        query_param("limit", "at most this many (default 100)", {"type": "integer"}),
        query_param("before", "only notes with a smaller id (next page)", {"type": "integer"}),
    ],
    responses={"200": {"description": "newest first; `next_before` pages on (null: no more)"}},
)
async def list_voicemails(request: Request, user: Principal) -> Response:
    """Voicemails left for collectors (notes of kind voicemail, with their recordings).

    Collectors: the ones on accounts assigned to them; everyone else: all of them."""
    params = query(request, ("limit", "before"))
    limit = int_query(params, "limit", 100, 1, MAX_PAGE)
    before = int_query(params, "before", None, 1, 2**63 - 1)
    args = (sessions_of(request), user, client_addr(request), limit, before)
    notes = await run_in_threadpool(voicemail_list, *args)
    next_before = notes[-1]["id"] if len(notes) == limit else None
    return JSONResponse({"voicemails": notes, "next_before": next_before})


def voicemail_notes(user: Principal) -> Select[tuple[Note, str]]:
    """The voicemails `user` may see, with their account numbers (the API's and the pages')."""
    stmt = (
        select(Note, Account.number)
        .join(Account, Account.id == Note.account_id)
        .where(Note.kind == "voicemail")
    )
    if user.role == "collector":  # as sees_account: their own accounts, and only those
        mine = user.collector_id
        stmt = stmt.where(Account.collector_id == mine if mine is not None else false())
    return stmt


def voicemail_list(
    sessions: sessionmaker[Session],
    user: Principal,
    addr: str | None,
    limit: int,
    before: int | None,
) -> list[dict[str, Any]]:
    with sessions.begin() as session:
        stmt = voicemail_notes(user).order_by(Note.id.desc())
        if before is not None:
            stmt = stmt.where(Note.id < before)
        rows = session.execute(stmt.limit(limit)).all()
        notes = [note_dict(note, number, session) for note, number in rows]
        detail = {"count": len(notes), "ids": [n["id"] for n in notes]}
        audit.record(session, user, addr, "voicemails.list", "note", None, detail)
    return notes


@requires(*READERS)
@documented(
    parameters=[id_param("note_id")],
    responses={
        "200": {
            "description": "the note",
            "content": {"application/json": {"schema": _NOTE_SCHEMA}},
        },
        **error_responses("404"),
    },
)
async def get_note(request: Request, user: Principal) -> Response:
    """One note.

    Collectors: only notes on accounts assigned to them (404 otherwise)."""
    note_id = int_id(request, "note_id")
    args = (sessions_of(request), user, client_addr(request), note_id)
    note = await run_in_threadpool(_get, *args)
    if note is None:
        raise HTTPException(404, f"no note {note_id}")
    return JSONResponse(note)


def _get(
    sessions: sessionmaker[Session], user: Principal, addr: str | None, note_id: int
) -> dict[str, Any] | None:
    stmt = (
        select(Note, Account.number, Account.collector_id)
        .join(Account, Account.id == Note.account_id)
        .where(Note.id == note_id)
    )
    with sessions.begin() as session:
        row = session.execute(stmt).first()
        if row is None:
            deny(session, user, addr, "note", note_id, "no such note")
            return None
        note, number, collector_id = row
        if not sees_account(user, collector_id):
            reason = "note on an account not assigned to this collector"
            deny(session, user, addr, "note", note_id, reason)
            return None
        audit.record(session, user, addr, "note.read", "note", note_id, {"account": number})
        return note_dict(note, number, session)


@requires(*WRITERS)
@documented(
    requestBody=json_body(
        {
            "type": "object",
            "required": ["body"],
            "additionalProperties": False,
            "properties": {"body": {"type": "string", "minLength": 1, "maxLength": MAX_BODY}},
        }
    ),
    responses={
        "201": {
            "description": "the new note (its URL in Location)",
            "content": {"application/json": {"schema": _NOTE_SCHEMA}},
        },
        **error_responses("404", "422"),
    },
)
async def add_note(request: Request, user: Principal) -> Response:
    """Add a manual note to an account, written by the caller.

    Collectors: only accounts assigned to them (404 otherwise). Compliance cannot write."""
    number = account_number(request)
    body = note_body(await read_json(request))
    args = (sessions_of(request), user, client_addr(request), number, body)
    note = await run_in_threadpool(add_manual_note, *args)
    if note is None:
        raise HTTPException(404, f"no account {number}")
    return JSONResponse(note, status_code=201, headers={"Location": f"/api/notes/{note['id']}"})


def note_body(data: dict[str, Any]) -> str:
    if set(data) != {"body"}:
        raise HTTPException(422, 'expected exactly {"body": "..."}')
    body = data["body"]
    if not isinstance(body, str) or not body.strip():
        raise HTTPException(422, "body must be non-empty text")
    if len(body) > MAX_BODY:
        raise HTTPException(422, f"body longer than {MAX_BODY} characters")
    if _CONTROL.search(body):
        raise HTTPException(422, "body contains control characters")
    return body


def add_manual_note(
    sessions: sessionmaker[Session], user: Principal, addr: str | None, number: str, body: str
) -> dict[str, Any] | None:
    with sessions.begin() as session:
        account = visible_account(session, user, addr, number)
        if account is None:
            return None
        note = Note(account_id=account.id, author=user.name, kind="manual", body=body)
        session.add(note)
        session.flush()
        detail = {"account": number, "chars": len(body)}
        audit.record(session, user, addr, "note.create", "note", note.id, detail)
        return note_dict(note, number)


ROUTES = [
    Route("/voicemails", list_voicemails, methods=["GET"]),
    Route("/accounts/{number}/notes", list_notes, methods=["GET"]),
    Route("/accounts/{number}/notes", add_note, methods=["POST"]),
    Route("/notes/{note_id}", get_note, methods=["GET"]),
]
