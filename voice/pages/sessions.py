"""Server-side page sessions: the cookie, idle expiry, the CSRF token of each session.

The cookie holds 256 random bits; the database keeps only their SHA-256 (accounts/webtables.py
`WebSession`), the user, a CSRF token and when the session was last used. A session idle for
`http.session_idle_minutes` is gone (deleted when next seen); logout, a new password and
`voice users disable` delete a user's sessions. Logins themselves (password check, throttle)
are accounts/logins.py.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from accounts.logins import session_digest
from accounts.models import User, utcnow
from accounts.users import Principal
from accounts.webtables import WebSession
from voice.config import Config

COOKIE = "voice_session"
LOGIN_CSRF_COOKIE = "voice_login_csrf"  # before a session exists: double-submit for /login
# last_seen_at is written at most this often: a page's burst of requests costs one UPDATE.
TOUCH_EVERY = dt.timedelta(seconds=30)
MAX_COOKIE = 100


@dataclass(frozen=True)
class Opened:
    """A live session as a request sees it."""

    user: Principal
    csrf: str


def cookie_options(cfg: Config) -> dict[str, object]:
    """How the session cookies are set: never readable by scripts, not sent cross-site."""
    return {
        "httponly": True,
        "samesite": "lax",
        "secure": cfg.http.public_url.startswith("https://"),
        "path": "/",
    }


class WebSessions:
    """Open, find and end page sessions. Blocking: call off the event loop."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        idle: dt.timedelta,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._sessions, self._idle, self._clock = sessions, idle, clock

    def open(self, user: Principal) -> tuple[str, str]:
        """A new session for `user`: (cookie value, CSRF token)."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self._clock()
        with self._sessions.begin() as session:
            row = WebSession(
                id_hash=session_digest(sid),
                user_id=user.id,
                csrf=csrf,
                created_at=now,
                last_seen_at=now,
            )
            session.add(row)
        return sid, csrf

    def find(self, sid: str | None) -> Opened | None:
        """The session behind a cookie value, if it is live and its user active."""
        if not sid or len(sid) > MAX_COOKIE or not sid.isascii():
            return None
        now = self._clock()
        with self._sessions.begin() as session:
            row = session.get(WebSession, session_digest(sid))
            if row is None:
                return None
            user = session.get(User, row.user_id)
            if user is None or not user.active or now - row.last_seen_at > self._idle:
                session.delete(row)
                return None
            if now - row.last_seen_at >= TOUCH_EVERY:
                row.last_seen_at = now
            principal = Principal(user.id, user.name, user.role, user.collector_id)
            return Opened(principal, row.csrf)

    def end(self, sid: str | None) -> None:
        if not sid or len(sid) > MAX_COOKIE:
            return
        with self._sessions.begin() as session:
            session.execute(delete(WebSession).where(WebSession.id_hash == session_digest(sid)))

    def count(self, user_id: int) -> int:
        """How many sessions the user has open (tests, and `voice users list` if it wants)."""
        with self._sessions() as session:
            rows = session.scalars(select(WebSession.id_hash).where(WebSession.user_id == user_id))
            return len(list(rows))
