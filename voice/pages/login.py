"""Logging in and out, and `/`, which sends each role to its first page.

The login form has its own CSRF token before any session exists: a random value in a cookie
(`voice_login_csrf`) that the form must repeat, so another site cannot log a browser in under
its own account. A wrong user name, a wrong password and a disabled user get the same answer;
5 failures for one name within 15 minutes answer 429 for 15 minutes (accounts/logins.py).
"""

from __future__ import annotations

import hmac
import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from accounts.logins import MAX_PASSWORD, Passwords, Throttled
from accounts.users import Principal
from voice.api.auth import client_addr, clock_of, config_of, sessions_of
from voice.pages.sessions import COOKIE, LOGIN_CSRF_COOKIE, cookie_options
from voice.pages.web import page, read_form, render, safe_next, see_other, to_login, web_sessions

WRONG = "Wrong user name or password."
HOME = {"compliance": "/recordings"}  # every other role starts at /today


async def login_form(request: Request) -> Response:
    if await run_in_threadpool(_logged_in, request):
        return see_other(safe_next(request.query_params.get("next")))
    return _form(request, status=200)


async def login(request: Request) -> Response:
    form = await read_form(request)
    name, password = str(form.get("name", "")).strip(), str(form.get("password", ""))
    nxt = safe_next(str(form.get("next", "")))
    sent, kept = str(form.get("csrf", "")), request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not kept or not hmac.compare_digest(sent.encode(), kept.encode()):
        message = "The login form had expired, so nothing was sent. Please log in again."
        return _form(request, 403, nxt, name, {"form": message})
    errors = {}
    if not name:
        errors["name"] = "Enter your user name."
    if not password:
        errors["password"] = "Enter your password."
    elif len(password) > MAX_PASSWORD:
        errors["password"] = f"At most {MAX_PASSWORD} characters."
    if errors:
        return _form(request, 422, nxt, name, errors)
    passwords = Passwords(sessions_of(request), clock_of(request))
    try:
        user = await run_in_threadpool(passwords.login, name, password, client_addr(request))
    except Throttled as exc:
        return _form(request, 429, nxt, name, {"form": f"{exc}."})
    if user is None:
        return _form(request, 401, nxt, name, {"form": WRONG})
    sid, _csrf = await run_in_threadpool(web_sessions(request).open, user)
    response = see_other(nxt if nxt != "/" else HOME.get(user.role, "/today"))
    response.set_cookie(COOKIE, sid, **cookie_options(config_of(request)))  # type: ignore[arg-type]
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@page("collector", "supervisor", "compliance", "admin")
async def logout(request: Request, user: Principal) -> Response:
    await run_in_threadpool(web_sessions(request).end, request.cookies.get(COOKIE))
    response = see_other("/login")
    response.delete_cookie(COOKIE, path="/")
    return response


async def home(request: Request) -> Response:
    opened = await run_in_threadpool(_logged_in, request)
    if opened is None:
        return to_login(request)
    return see_other(HOME.get(opened.role, "/today"))


def _logged_in(request: Request) -> Principal | None:
    opened = web_sessions(request).find(request.cookies.get(COOKIE))
    return opened.user if opened else None


def _form(
    request: Request,
    status: int,
    nxt: str | None = None,
    name: str = "",
    errors: dict[str, str] | None = None,
) -> Response:
    token = secrets.token_urlsafe(32)
    if nxt is None:
        nxt = safe_next(request.query_params.get("next"))
    ctx = {"next": nxt, "name": name, "errors": errors or {}, "login_csrf": token}
    response = render(request, None, "login.html", status=status, **ctx)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, **cookie_options(config_of(request)))  # type: ignore[arg-type]
    return response


ROUTES: list[BaseRoute] = [
    Route("/", home, methods=["GET"]),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
