"""Page logins: users' passwords (argon2), their web sessions, and the failed-login throttle.

A password is kept only as its argon2id hash (argon2-cffi's defaults): slow on purpose, since
people choose guessable passwords (the API tokens, 256 random bits, need no such hash). A web
session is stored server-side; the browser's cookie holds a random id of which only the SHA-256
is kept, so a copy of the database opens no session. The tables live apart from
accounts/models.py (accounts/webtables.py) so that a database made before the pages existed
gets them by `create_schema` (which adds missing tables, never columns).

Throttle: `MAX_FAILURES` failed logins for one user name within `WINDOW` lock that name for
`WINDOW` from the last of them; unknown names are throttled the same way, so the answer never
tells whether a user exists.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from accounts import audit
from accounts.models import User, utcnow
from accounts.users import Principal, UserError
from accounts.webtables import LoginFailure, LoginLock, UserPassword, WebSession

MAX_FAILURES = 5
WINDOW = dt.timedelta(minutes=15)
MIN_PASSWORD = 10  # characters
MAX_PASSWORD = 1000  # argon2 hashes any length; this only bounds the work one request asks for

_HASHER = PasswordHasher()
# Verified against for unknown names, so a wrong name costs the same time as a wrong password.
_DUMMY_HASH = _HASHER.hash("not a password anybody has")


def session_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"password: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"password: at most {MAX_PASSWORD} characters")
    if password != password.strip():
        raise UserError("password must not start or end with spaces")


class Throttled(Exception):
    def __init__(self, until: dt.datetime) -> None:
        super().__init__(f"too many failed logins; try again after {until:%H:%M} UTC")
        self.until = until


class _Anonymous:
    """The actor of an audit row about a name that is no user."""

    id = None
    role = "anonymous"

    def __init__(self, name: str) -> None:
        self.name = name


class Passwords:
    """Set users' passwords and check logins (with the throttle). Blocking: off the loop."""

    def __init__(
        self, sessions: sessionmaker[Session], clock: Callable[[], dt.datetime] = utcnow
    ) -> None:
        self._sessions, self._clock = sessions, clock

    def set(self, name: str, password: str, *, by: Principal | None = None) -> None:
        check_password(password)
        digest = _HASHER.hash(password)
        with self._sessions.begin() as session:
            user = session.scalar(select(User).where(User.name == name))
            if user is None:
                raise UserError(f"no user {name!r}")
            row = session.get(UserPassword, user.id)
            if row is None:
                session.add(UserPassword(user_id=user.id, hash=digest, set_at=utcnow()))
            else:
                row.hash, row.set_at = digest, utcnow()
            # A new password ends the sessions opened with the old one.
            session.execute(delete(WebSession).where(WebSession.user_id == user.id))
            audit.record(session, by, None, "user.password", "user", name)

    def login(self, name: str, password: str, addr: str | None) -> Principal | None:
        """The active user with this name and password, or None (a failure, counted);
        raises `Throttled` while the name is locked, without looking at the password."""
        name = name[:64]
        now = self._clock()
        with self._sessions.begin() as session:
            user = session.scalar(select(User).where(User.name == name))
            actor = user if user is not None else _Anonymous("anonymous")
            lock = session.get(LoginLock, name)
            if lock is not None and lock.until > now:
                detail = {"name": name, "until": lock.until.isoformat()}
                audit.record(session, actor, addr, "login.throttled", "user", name, detail)
                throttled = Throttled(lock.until)
            else:
                throttled = None
        if throttled is not None:
            raise throttled
        principal = self._verify(user, password)
        with self._sessions.begin() as session:
            if principal is not None:
                session.execute(delete(LoginFailure).where(LoginFailure.user_name == name))
                audit.record(session, principal, addr, "login", "user", name)
                return principal
            session.add(LoginFailure(user_name=name, at=now, client_addr=addr))
            session.flush()
            count = session.scalar(
                select(func.count(LoginFailure.id)).where(
                    LoginFailure.user_name == name, LoginFailure.at > now - WINDOW
                )
            )
            detail = {"name": name, "failures": count}
            audit.record(session, actor, addr, "login.failed", "user", name, detail)
            if count is not None and count >= MAX_FAILURES:
                lock = session.get(LoginLock, name)
                if lock is None:
                    session.add(LoginLock(user_name=name, until=now + WINDOW))
                else:
                    lock.until = now + WINDOW
                detail = {"name": name, "until": (now + WINDOW).isoformat()}
                audit.record(session, actor, addr, "login.throttled", "user", name, detail)
        return None

    def _verify(self, user: User | None, password: str) -> Principal | None:
        stored = None
        if user is not None and user.active and len(password) <= MAX_PASSWORD:
            with self._sessions() as session:
                row = session.get(UserPassword, user.id)
                stored = row.hash if row is not None else None
        try:
            _HASHER.verify(stored or _DUMMY_HASH, password[:MAX_PASSWORD])
        except (VerificationError, InvalidHashError):
            return None
        if stored is None or user is None:
            return None
        return Principal(user.id, user.name, user.role, user.collector_id)
