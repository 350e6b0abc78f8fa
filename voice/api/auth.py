"""Bearer-token authentication and per-endpoint roles for the HTTP API.

Every endpoint says who may call it with one decorator, which the role-matrix test
(tests/unit/test_api_roles.py) and the OpenAPI document both read back:

    @requires("compliance", "admin")
    async def list_audit(request: Request, user: Principal) -> Response: ...

    @public
    async def openapi(request: Request) -> Response: ...

`requires` answers 401 (with `WWW-Authenticate: Bearer`) for a missing, unknown or revoked
token and 403 with a JSON reason for a role not listed (recorded in the audit log as
`access.denied`), then calls the handler with the authenticated `Principal`. Collectors see only
their own accounts: handlers check `sees_account` and answer 404 through `deny`, so another
collector's account looks exactly like one that does not exist.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accounts import audit
from accounts.models import USER_ROLES, utcnow
from accounts.users import Principal, Users
from voice.config import Config

log = logging.getLogger(__name__)

Handler = Callable[[Request, Principal], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

DENIED = "access.denied"  # the audit action of every refusal to an authenticated user
REALM = "collections-voice"
_MAX_TOKEN = 200


def requires(*roles: str) -> Callable[[Handler], Endpoint]:
    """Allow only users with one of `roles`; the handler gets the authenticated Principal."""
    unknown = [role for role in roles if role not in USER_ROLES]
    if not roles or unknown:
        raise ValueError(f"requires(): roles must be some of {USER_ROLES}, got {roles}")
    allowed = frozenset(roles)

    def decorate(handler: Handler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            user = await authenticate(request)
            if user.role not in allowed:
                reason = await refuse_role(request, user, allowed)
                return JSONResponse({"error": "forbidden", "reason": reason}, status_code=403)
            return await handler(request, user)

        endpoint.roles = allowed  # type: ignore[attr-defined]
        endpoint.public = False  # type: ignore[attr-defined]
        return endpoint

    return decorate


async def refuse_role(request: Request, user: Principal, allowed: frozenset[str]) -> str:
    """Audit a request refused for its user's role (API and pages alike); the reason."""
    reason = (
        f"role {user.role} may not {request.method} {request.url.path} "
        f"(allowed: {', '.join(r for r in USER_ROLES if r in allowed)})"
    )
    target = f"{request.method} {request.url.path}"[:100]
    detail = {"status": 403, "reason": reason}
    await run_in_threadpool(
        audit.record,
        sessions_of(request),
        user,
        client_addr(request),
        DENIED,
        "endpoint",
        target,
        detail,
    )
    return reason


def public(endpoint: Endpoint) -> Endpoint:
    """Mark an endpoint as open to anyone (it must reveal no data): the OpenAPI document."""
    endpoint.roles = frozenset()  # type: ignore[attr-defined]
    endpoint.public = True  # type: ignore[attr-defined]
    return endpoint


def roles_of(endpoint: Any) -> frozenset[str] | None:
    """The roles an endpoint declared; frozenset() if public; None if it declared nothing."""
    return getattr(endpoint, "roles", None)


async def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("missing bearer token (Authorization: Bearer TOKEN)", error=None)
    if len(token) > _MAX_TOKEN or not token.isascii():
        raise _unauthorized("invalid or revoked token", error="invalid_token")
    user = await run_in_threadpool(Users(sessions_of(request)).authenticate, token)
    if user is None:
        raise _unauthorized("invalid or revoked token", error="invalid_token")
    return user


def _unauthorized(reason: str, error: str | None) -> HTTPException:
    challenge = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    return HTTPException(401, reason, headers={"WWW-Authenticate": challenge})


def sees_account(user: Principal, collector_id: int | None) -> bool:
    """May `user` see things of an account assigned to `collector_id` (None: unassigned)?
    Collectors see their own accounts only; every other role sees all."""
    if user.role != "collector":
        return True
    return collector_id is not None and collector_id == user.collector_id


def deny(
    session: Session | sessionmaker[Session],
    user: Principal,
    addr: str | None,
    target_type: str,
    target_id: str | int | None,
    reason: str,
    status: int = 404,
) -> None:
    """Record a refusal (not found, or not this collector's) before answering `status`."""
    detail = {"status": status, "reason": reason}
    audit.record(session, user, addr, DENIED, target_type, target_id, detail)


def sessions_of(request: Request) -> sessionmaker[Session]:
    return request.app.state.sessions  # type: ignore[no-any-return]


def config_of(request: Request) -> Config:
    """The server's configuration; the built-in defaults for an API built without one."""
    cfg = getattr(request.app.state, "cfg", None)
    return cfg if cfg is not None else Config()


def clock_of(request: Request) -> Callable[[], dt.datetime]:
    """`app.state.clock` if a test set one; the real time otherwise."""
    return getattr(request.app.state, "clock", None) or utcnow


def client_addr(request: Request) -> str | None:
    return request.client.host if request.client else None


_PHRASES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    413: "too large",
    415: "unsupported media type",
    503: "unavailable",
}
BUSY = "the database is busy: try again in a moment"  # what a refused transaction tells


async def json_error(request: Request, exc: Exception) -> Response:
    """Errors under /api are JSON: {"error": "...", "reason": "..."}."""
    assert isinstance(exc, HTTPException)
    body = {"error": _PHRASES.get(exc.status_code, "invalid request"), "reason": exc.detail}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def database_busy(request: Request, exc: Exception) -> Response:
    """The database refused (SQLite's lock past its busy timeout, PostgreSQL restarting):
    503 with Retry-After, not a 500. Its transaction was rolled back."""
    log.warning("%s %s: database refused: %s", request.method, request.url.path, exc)
    return await json_error(request, HTTPException(503, BUSY, headers={"Retry-After": "2"}))
