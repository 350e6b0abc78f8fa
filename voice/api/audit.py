"""GET /api/audit: the audit log, for compliance and administrators. Reading it is audited too.

There is no route that changes or deletes an entry, and there will not be one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accounts import audit
from accounts.users import Principal
from voice.api.auth import client_addr, requires, sessions_of
from voice.api.openapi import documented, error_responses, query_param
from voice.api.params import int_query, query, utc_query, utc_until

_STRING = {"type": "string"}
AUDIT_PARAMS = ("since", "until", "user", "action", "target", "after", "limit")


@requires("compliance", "admin")
@documented(
    parameters=[
        query_param("since", "entries at or after (ISO 8601 with offset, or a date)", _STRING),
        query_param("until", "entries before (ISO 8601 with offset, or a date)", _STRING),
        query_param("user", "only this user's entries (`cli`: the command line)", _STRING),
        query_param("action", "only this action, e.g. note.read, access.denied", _STRING),
        query_param("target", "only this target: a type (`recording`) or `type:id`", _STRING),
        query_param("after", "only entries with a larger id (next page)", {"type": "integer"}),
        query_param("limit", "at most this many entries (default 200)", {"type": "integer"}),
    ],
    responses={
        "200": {"description": "oldest first; `next_after` pages on (null: no more)"},
        **error_responses("422"),
    },
)
async def list_audit(request: Request, user: Principal) -> Response:
    """Audit log entries: who did what to what, when, from where."""
    filters = filters_from(query(request, AUDIT_PARAMS))
    args = (sessions_of(request), user, client_addr(request), filters)
    entries = await run_in_threadpool(read_for, *args)
    next_after = entries[-1]["id"] if len(entries) == filters["limit"] else None
    return JSONResponse({"entries": entries, "next_after": next_after})


def filters_from(params: dict[str, str]) -> dict[str, Any]:
    """The query's filters for accounts.audit.entries; HTTPException(422) naming a bad one."""
    target_type, _, target_id = (_short(params, "target", 140) or "").partition(":")
    return {
        "since": utc_query(params, "since"),
        "until": utc_until(params, "until"),
        "user": _short(params, "user", 100),
        "action": _short(params, "action", 64),
        "target_type": target_type or None,
        "target_id": target_id or None,
        "after_id": int_query(params, "after", None, 0, 2**63 - 1),
        "limit": int_query(params, "limit", 200, 1, audit.MAX_LIMIT),
    }


def _short(params: dict[str, str], name: str, limit: int) -> str | None:
    value = params.get(name)
    if value is not None and not (0 < len(value) <= limit and value.isprintable()):
        raise HTTPException(422, f"{name} must be 1-{limit} printable characters")
    return value


def read_for(
    sessions: sessionmaker[Session], user: Principal, addr: str | None, filters: dict[str, Any]
) -> list[dict[str, Any]]:
    rows = [audit.as_dict(entry) for entry in audit.entries(sessions, **filters)]
    shown = {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in filters.items()}
    detail = {"filters": shown, "count": len(rows)}
    audit.record(sessions, user, addr, "audit.read", "audit_log", None, detail)
    return rows


ROUTES = [Route("/audit", list_audit, methods=["GET"])]
