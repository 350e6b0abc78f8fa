"""Tables of the pages: passwords, web sessions, the login throttle, voicemails handled.

Kept apart from accounts/models.py so that a database made before the pages existed gets them
from `create_schema`, which adds missing tables (never columns to existing ones); and so that
accounts/users.py (ending sessions) and accounts/logins.py (making them) share them without
importing each other. accounts/db.py imports this module so the tables are on `Base`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DDL, ForeignKey, Index, String, event
from sqlalchemy.orm import Mapped, mapped_column

from accounts.models import Base, UtcDateTime, utcnow


class UserPassword(Base):
    __tablename__ = "user_passwords"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    hash: Mapped[str] = mapped_column(String(200))
    set_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class WebSession(Base):
    """A logged-in browser. `id_hash` is the SHA-256 of the cookie's value."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


class LoginFailure(Base):
    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_name_at", "user_name", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_name: Mapped[str] = mapped_column(String(64))  # as typed (cut to 64), known or not
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    client_addr: Mapped[str | None] = mapped_column(String(100))


class LoginLock(Base):
    __tablename__ = "login_locks"

    user_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    until: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class VoicemailHandled(Base):
    """A voicemail (a note of kind voicemail) marked handled: by whom and when. One per note."""

    __tablename__ = "voicemails_handled"

    note_id: Mapped[int] = mapped_column(ForeignKey("notes.id"), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(100))
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)


# What the pages look up by, on tables older than the pages (create_all adds indexes only with a
# new table, so they come with this one): /today's accounts of one collector, and the
# voicemails counted in every page's header (bench/pages.py measures both).
PAGE_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_accounts_collector ON accounts (collector_id)",
    "CREATE INDEX IF NOT EXISTS ix_notes_kind_account ON notes (kind, account_id)",
)
for _statement in PAGE_INDEXES:
    event.listen(VoicemailHandled.__table__, "after_create", DDL(_statement))
