"""Page logins on SQLite and PostgreSQL: passwords, session cookies, CSRF, the throttle,
idle expiry, logout, and `disable` / a new password ending sessions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from accounts.logins import Passwords, Throttled
from accounts.models import AuditEntry, utcnow
from accounts.users import UserError, Users
from tests.unit.pagesworld import PASSWORD, PagesWorld, make_pages_world
from voice.config import from_mapping
from voice.pages.sessions import COOKIE

PAGE = "/recordings/1/audio"  # any page behind a session


@pytest.fixture
def w(database_url: str) -> Iterator[PagesWorld]:
    world = make_pages_world(database_url)
    yield world
    world.world.engine.dispose()


def _actions(w: PagesWorld, action: str) -> list[AuditEntry]:
    with w.sessions() as session:
        stmt = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        return list(session.scalars(stmt))


def test_no_session_goes_to_login_and_back(w: PagesWorld) -> None:
    browser = w.browser()
    r = browser.get(PAGE + "?download=1")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=" + PAGE + "%3Fdownload%3D1"
    r = browser.login("dana", nxt=PAGE + "?download=1")
    assert (r.status_code, r.headers["location"]) == (303, PAGE + "?download=1")


def test_cookie_is_httponly_samesite_and_not_secure_over_http(w: PagesWorld) -> None:
    browser = w.browser()
    r = browser.login("dana")
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and COOKIE in v)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    assert r.headers["location"] == "/today"


def test_cookie_is_secure_behind_https(tmp_path: object) -> None:
    cfg = from_mapping({"http": {"public_url": "https://collect.example"}}, {})
    w = make_pages_world(f"sqlite:///{tmp_path}/voice.db", cfg)
    browser = w.browser()
    browser.base_url = "https://testserver"
    r = browser.login("dana")
    w.world.engine.dispose()
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and COOKIE in v)
    assert "Secure" in cookie


def test_unknown_user_and_wrong_password_get_the_same_answer(w: PagesWorld) -> None:
    wrong = w.browser().login("dana", "not the password")
    unknown = w.browser().login("nobody", "not the password")
    disabled = w.browser().login("olga", PASSWORD)  # disabled, and has no password anyway
    for r in (wrong, unknown, disabled):
        assert r.status_code == 401
        assert "Wrong user name or password." in r.text
        assert COOKIE not in r.headers.get("set-cookie", "")
    assert [e.user_name for e in _actions(w, "login.failed")] == ["dana", "anonymous", "olga"]


def test_missing_fields_are_shown_beside_them(w: PagesWorld) -> None:
    r = w.browser().login("", "")
    assert r.status_code == 422
    assert 'id="name-error">Enter your user name.' in r.text
    assert 'id="password-error">Enter your password.' in r.text
    assert 'aria-describedby="name-error"' in r.text


def test_login_without_its_csrf_token_logs_nobody_in(w: PagesWorld) -> None:
    browser = w.browser()
    browser.get("/login")
    r = browser.post("/login", {"csrf": "forged", "name": "dana", "password": PASSWORD})
    assert r.status_code == 403
    assert COOKIE not in r.headers.get("set-cookie", "")
    assert _actions(w, "login") == []


def test_five_failures_lock_the_name_for_fifteen_minutes(w: PagesWorld) -> None:
    now = utcnow()
    w.state.clock = lambda: now
    for _ in range(5):
        assert w.browser().login("dana", "wrong password").status_code == 401
    r = w.browser().login("dana")  # the right password, but locked
    assert r.status_code == 429
    assert "too many failed logins" in r.text
    throttled = _actions(w, "login.throttled")
    assert len(throttled) == 2  # the lock, then the refused attempt
    assert throttled[0].detail["until"] == (now + dt.timedelta(minutes=15)).isoformat()
    w.state.clock = lambda: now + dt.timedelta(minutes=14, seconds=59)
    assert w.browser().login("dana").status_code == 429
    w.state.clock = lambda: now + dt.timedelta(minutes=15, seconds=1)
    assert w.browser().login("dana").status_code == 303
    # success clears the count: four more failures do not lock
    for _ in range(4):
        assert w.browser().login("dana", "wrong password").status_code == 401
    assert w.browser().login("dana").status_code == 303


def test_unknown_names_are_throttled_too(w: PagesWorld) -> None:
    for _ in range(5):
        w.browser().login("ghost", "whatever password")
    assert w.browser().login("ghost", "whatever password").status_code == 429


def test_idle_session_expires(w: PagesWorld) -> None:
    now = utcnow()
    w.state.clock = lambda: now
    browser = w.browser("dana")
    w.state.clock = lambda: now + dt.timedelta(minutes=29)
    assert browser.get("/").headers["location"] == "/today"  # still in, and touched
    w.state.clock = lambda: now + dt.timedelta(minutes=29 + 29)
    assert browser.get("/").headers["location"] == "/today"
    w.state.clock = lambda: now + dt.timedelta(minutes=29 + 29 + 31)
    assert browser.get("/").headers["location"] == "/login?next=/"


def test_logout_ends_the_session_and_needs_csrf(w: PagesWorld) -> None:
    browser = w.browser("dana")
    r = browser.post("/logout", {"csrf": "wrong"})
    assert r.status_code == 403
    assert "nothing was changed" in r.text
    assert browser.get("/").headers["location"] == "/today"  # still logged in
    old = browser.cookies.get(COOKIE)
    token = _page_token(browser)
    r = browser.post("/logout", {"csrf": token})
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    browser.cookies.set(COOKIE, old or "", domain="testserver.local")
    assert browser.get("/").headers["location"] == "/login?next=/"


def _page_token(browser: object) -> str:
    """The session's CSRF token, from a page that shows the header (the 404 page does not)."""
    r = browser.get(PAGE)  # type: ignore[attr-defined]
    import re

    match = re.search(r'name="csrf" value="([^"]+)"', r.text)
    assert match, r.text
    return match[1]


def test_disable_and_new_password_end_sessions(w: PagesWorld) -> None:
    dana, sam = w.browser("dana"), w.browser("sam")
    Users(w.sessions).disable("dana")
    assert dana.get("/").status_code == 303 and dana.get("/").headers["location"].startswith(
        "/login"
    )
    assert w.browser().login("dana").status_code == 401
    Passwords(w.sessions).set("sam", "another good password")
    assert sam.get("/").headers["location"] == "/login?next=/"
    assert w.browser().login("sam").status_code == 401
    assert w.browser().login("sam", "another good password").status_code == 303


def test_passwords_are_argon2_and_checked(w: PagesWorld) -> None:
    with pytest.raises(UserError, match="at least 10"):
        Passwords(w.sessions).set("dana", "short")
    with pytest.raises(UserError, match="no user"):
        Passwords(w.sessions).set("nobody", PASSWORD)
    from accounts.webtables import UserPassword

    with w.sessions() as session:
        stored = list(session.scalars(select(UserPassword.hash)))
    assert stored and all(h.startswith("$argon2id$") for h in stored)
    assert PASSWORD not in "".join(stored)


def test_next_never_leaves_the_site(w: PagesWorld) -> None:
    for nxt in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "today"):
        r = w.browser().login("dana", nxt=nxt)
        assert r.headers["location"] == "/today", nxt


def test_throttle_is_raised_by_the_service(w: PagesWorld) -> None:
    passwords = Passwords(w.sessions)
    for _ in range(5):
        assert passwords.login("sam", "wrong password", "10.0.0.1") is None
    with pytest.raises(Throttled):
        passwords.login("sam", PASSWORD, "10.0.0.1")


def test_every_page_but_login_needs_a_session_and_declares_its_roles() -> None:
    """The pages' role matrix: a route is either `@page(...)` (roles declared) or one of the
    few that must work logged out."""
    from starlette.routing import Mount, Route

    from voice.pages import pages_routes

    [mount] = pages_routes(None)  # type: ignore[arg-type]
    assert isinstance(mount, Mount)
    public, guarded = set(), {}
    for route in mount.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Route):
            roles = getattr(route.endpoint, "roles", None)
            for method in sorted((route.methods or set()) - {"HEAD"}):
                key = f"{method} {route.path}"
                if roles is None:
                    public.add(key)
                else:
                    guarded[key] = roles
    assert public == {"GET /", "GET /login", "POST /login"}
    assert guarded["GET /today"] == {"collector", "supervisor", "admin"}
    assert guarded["POST /calls"] == {"collector"}
    assert "compliance" not in guarded["POST /accounts/{number}/notes"]
    assert guarded["GET /accounts/{number}"] >= {"collector", "compliance"}
