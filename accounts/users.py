"""API users, their roles and their bearer tokens.

A token is 256 random bits, shown once and stored as its SHA-256: a fast hash is enough for a
secret that cannot be guessed (nothing to brute-force, unlike a password), and it lets a request
find its user by an indexed lookup. Rotating a token or disabling a user ends the old token at
once. Every change is written to the audit log in the same transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from accounts import audit
from accounts.models import USER_NAME, USER_ROLES, Collector, User, utcnow
from accounts.webtables import WebSession

TOKEN_PREFIX = "cv_"  # makes a leaked token recognisable to secret scanners and to people


class UserError(ValueError):
    """A user operation was refused; the message says why."""


@dataclass(frozen=True)
class Principal:
    """The user behind a request, as authenticated: plain values, no session attached."""

    id: int
    name: str
    role: str
    collector_id: int | None


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    """Add, list, re-key, disable and enable API users; authenticate tokens.

    `by` / `client_addr` say who made a change, for the audit log (None: the command line).
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def add(
        self,
        name: str,
        role: str,
        collector: str | None = None,
        *,
        by: Principal | None = None,
        client_addr: str | None = None,
    ) -> tuple[User, str]:
        """Create a user; returns it and its token (the only time the token exists in clear)."""
        _check(name, role, collector)
        token = generate_token()
        with self._sessions.begin() as session:
            if session.scalar(select(User.id).where(User.name == name)) is not None:
                raise UserError(f"user {name!r} already exists")
            collector_id = None
            if collector is not None:
                found = session.scalar(select(Collector.id).where(Collector.name == collector))
                if found is None:
                    raise UserError(f"unknown collector {collector!r}")
                collector_id = found
            user = User(
                name=name,
                role=role,
                collector_id=collector_id,
                token_hash=hash_token(token),
                token_created_at=utcnow(),
            )
            session.add(user)
            session.flush()
            detail = {"role": role, "collector": collector}
            audit.record(session, by, client_addr, "user.create", "user", name, detail)
        return self.get(name), token

    def get(self, name: str) -> User:
        with self._sessions() as session:
            user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise UserError(f"no user {name!r}")
        return user

    def list(self) -> list[User]:
        with self._sessions() as session:
            return list(session.scalars(select(User).order_by(User.name)))

    def rotate_token(
        self, name: str, *, by: Principal | None = None, client_addr: str | None = None
    ) -> str:
        """A new token for an active user; the old one stops working now."""
        token = generate_token()
        with self._sessions.begin() as session:
            user = _find(session, name)
            if not user.active:
                raise UserError(f"user {name!r} is disabled: enable it to issue a token")
            user.token_hash, user.token_created_at = hash_token(token), utcnow()
            audit.record(session, by, client_addr, "user.token", "user", name)
        return token

    def disable(
        self, name: str, *, by: Principal | None = None, client_addr: str | None = None
    ) -> None:
        """Refuse the user from now on; the token is forgotten, so enabling needs a new one;
        their page sessions end now."""
        with self._sessions.begin() as session:
            user = _find(session, name)
            if not user.active:
                raise UserError(f"user {name!r} is already disabled")
            user.active, user.token_hash, user.disabled_at = False, None, utcnow()
            session.execute(delete(WebSession).where(WebSession.user_id == user.id))
            audit.record(session, by, client_addr, "user.disable", "user", name)

    def enable(
        self, name: str, *, by: Principal | None = None, client_addr: str | None = None
    ) -> str:
        """Let a disabled user back in with a new token (the old one stays dead)."""
        token = generate_token()
        with self._sessions.begin() as session:
            user = _find(session, name)
            if user.active:
                raise UserError(f"user {name!r} is not disabled")
            user.active, user.disabled_at = True, None
            user.token_hash, user.token_created_at = hash_token(token), utcnow()
            audit.record(session, by, client_addr, "user.enable", "user", name)
        return token

    def authenticate(self, token: str) -> Principal | None:
        """The active user holding `token`, or None. Blocking: call it off the event loop."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = hash_token(token)
        with self._sessions() as session:
            user = session.scalar(select(User).where(User.token_hash == digest))
        # The lookup already matched the hash; comparing again in constant time costs nothing
        # and keeps the check honest if the lookup ever becomes a prefix or range query.
        if user is None or not user.active or user.token_hash is None:
            return None
        if not hmac.compare_digest(user.token_hash, digest):
            return None
        return Principal(user.id, user.name, user.role, user.collector_id)


def _find(session: Session, name: str) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise UserError(f"no user {name!r}")
    return user


def _check(name: str, role: str, collector: str | None) -> None:
    if not USER_NAME.fullmatch(name):
        raise UserError(f"user name {name!r}: use 1-64 of a-z 0-9 . _ -")
    if role not in USER_ROLES:
        raise UserError(f"unknown role {role!r}: one of {', '.join(USER_ROLES)}")
    if role == "collector" and collector is None:
        raise UserError("a collector user needs --collector NAME (the collector they are)")
    if role != "collector" and collector is not None:
        raise UserError(f"only collector users are linked to a collector, not {role} users")
