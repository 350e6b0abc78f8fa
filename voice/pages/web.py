"""What every page shares: the `page` decorator, rendering with the base layout, error pages.

    @page("collector", "supervisor", "admin")
    async def today(request: Request, user: Principal) -> Response:
        return render(request, user, "today.html", rows=...)

`page` finds the session behind the cookie (voice/pages/sessions.py): none, or expired, is a
303 to `/login?next=<where the user was>`; a role not listed is a 403 page, audited as the
API audits it (`access.denied`, voice/api/auth.py `refuse_role`); a POST whose `csrf` field
is not the session's token is a 403 page before the handler runs, so nothing changes.
Handlers then use the API's own services and access rules (`sees_account`,
`check_call_access`, ...): a page never has a second copy of a query or a permission check.

`request.app.state` carries `sessions`, `cfg`, `fleet` (and a test's `clock`) exactly as the
API's does, so voice/api/auth.py `sessions_of`, `config_of` and `clock_of` work in pages.
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from accounts import audit
from accounts.models import USER_ROLES, Note
from accounts.money import money_text
from accounts.users import Principal
from accounts.webtables import VoicemailHandled
from voice.api.auth import (
    DENIED,
    client_addr,
    clock_of,
    config_of,
    refuse_role,
    sessions_of,
)
from voice.api.notes import voicemail_notes
from voice.pages.sessions import COOKIE, Opened, WebSessions

Handler = Callable[[Request, Principal], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

HERE = Path(__file__).parent
MAX_FORM = 64 * 1024  # bytes: the largest form is a 10,000-character note
VOICEMAIL_READERS = ("collector", "supervisor", "admin")

# The header's links: (label, path, roles that see it). A page module adds its own line here.
NAV: list[tuple[str, str, tuple[str, ...]]] = [
    ("Today", "/today", ("collector", "supervisor", "admin")),
    ("Voicemails", "/voicemails", VOICEMAIL_READERS),
    ("Recordings", "/recordings", ("supervisor", "compliance", "admin")),
    ("Audit log", "/audit", ("compliance", "admin")),
]

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Our own static files only: no inline script, nothing from elsewhere.
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
}

TEMPLATES = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt variable fails the test, not the user
    )
)


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _money(cents: int | None, currency: str | None = "USD") -> str:
    return "" if cents is None else money_text(cents, currency or "USD")


TEMPLATES.env.filters["when"] = _when
TEMPLATES.env.filters["money"] = _money


def page(*roles: str) -> Callable[[Handler], Endpoint]:
    """Allow only logged-in users with one of `roles`; POSTs must carry the session's CSRF."""
    unknown = [role for role in roles if role not in USER_ROLES]
    if not roles or unknown:
        raise ValueError(f"page(): roles must be some of {USER_ROLES}, got {roles}")
    allowed = frozenset(roles)

    def decorate(handler: Handler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            opened, unhandled = await run_in_threadpool(_open, request)
            if opened is None:
                return to_login(request)
            user = opened.user
            request.state.user, request.state.csrf = user, opened.csrf
            request.state.unhandled = unhandled
            if user.role not in allowed:
                reason = await refuse_role(request, user, allowed)
                return render(request, user, "error.html", status=403, message=reason)
            if request.method == "POST" and not await _csrf_ok(request, opened.csrf):
                await run_in_threadpool(_deny_csrf, request, user)
                message = (
                    "This form was not sent from this page or has expired, so nothing was "
                    "changed. Reload the page and try again."
                )
                return render(request, user, "error.html", status=403, message=message)
            return await handler(request, user)

        endpoint.roles = allowed  # type: ignore[attr-defined]
        return endpoint

    return decorate


def render(
    request: Request, user: Principal | None, template: str, status: int = 200, **ctx: Any
) -> Response:
    """`template` (extending base.html) with the header's user, links, CSRF token and the
    number of unhandled voicemails."""
    context = {
        "user": user,
        "csrf": getattr(request.state, "csrf", ""),
        "nav": nav_for(user),
        "unhandled": getattr(request.state, "unhandled", None),
        "here": request.url.path,
        "status": status,
        **ctx,
    }
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def not_found(request: Request, user: Principal | None, what: str = "This page") -> Response:
    message = f"{what} does not exist, or is not yours to see."
    return render(request, user, "error.html", status=404, message=message)


def nav_for(user: Principal | None) -> list[tuple[str, str]]:
    if user is None:
        return []
    return [(label, path) for label, path, roles in NAV if user.role in roles]


def see_other(where: str) -> Response:
    """303 to `where` (after a form post, or to the page a role starts at)."""
    response = RedirectResponse(where, status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


def to_login(request: Request) -> Response:
    """303 to the login page, which comes back here (or to the page a POST came from)."""
    where = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        where = _referer_path(request) or "/"
    return see_other(f"/login?next={quote(where, safe='/')}")


def safe_next(value: str | None) -> str:
    """Where to go after login: a path on this site only (never `//elsewhere` or a URL)."""
    if not value or len(value) > 2000 or not value.isascii():
        return "/"
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    if any(ord(c) < 32 for c in value):
        return "/"
    return value


def web_sessions(request: Request) -> WebSessions:
    idle = dt.timedelta(minutes=config_of(request).http.session_idle_minutes)
    return WebSessions(sessions_of(request), idle, clock_of(request))


def _open(request: Request) -> tuple[Opened | None, int | None]:
    """The request's session and the header's voicemail count (one trip to the thread pool)."""
    opened = web_sessions(request).find(request.cookies.get(COOKIE))
    return opened, _unhandled(request, opened.user) if opened else None


def _unhandled(request: Request, user: Principal) -> int | None:
    """How many voicemails this user may see are not marked handled (None: not theirs)."""
    if user.role not in VOICEMAIL_READERS:
        return None
    handled = select(VoicemailHandled.note_id)
    inner = voicemail_notes(user).where(Note.id.not_in(handled)).subquery()
    with sessions_of(request)() as session:
        return session.scalar(select(func.count()).select_from(inner)) or 0


async def read_form(request: Request) -> FormData:
    """The posted form, refused (413) above MAX_FORM bytes before it is read."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM):
        raise HTTPException(413, f"a form is at most {MAX_FORM} bytes")
    return await request.form(max_files=0)


async def _csrf_ok(request: Request, token: str) -> bool:
    form = await read_form(request)
    sent = form.get("csrf")
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), token.encode())


def _deny_csrf(request: Request, user: Principal) -> None:
    target = f"{request.method} {request.url.path}"[:100]
    detail = {"status": 403, "reason": "missing or wrong CSRF token"}
    audit.record(sessions_of(request), user, client_addr(request), DENIED, "page", target, detail)


def _referer_path(request: Request) -> str | None:
    referer = request.headers.get("referer")
    if not referer:
        return None
    parts = urlsplit(referer)
    if parts.netloc and parts.netloc != request.url.netloc:
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")
