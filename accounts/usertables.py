"""Tables of who uses the system: collectors' SIP softphone logins, API/page users, and the
append-only audit log of every sensitive access (triggers refuse UPDATE and DELETE)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    ForeignKey,
    String,
    event,
)
from sqlalchemy.orm import (
    Mapped,
    mapped_column,
    relationship,
    validates,
)

from accounts.ledger import Collector
from accounts.orm import Base, UtcDateTime, utcnow

SOFTPHONE_USERNAME = re.compile(r"[a-z0-9._-]{1,64}")


class Softphone(Base):
    """A collector's SIP softphone login. Only digests are kept, never the password: `ha1` is
    MD5(username:realm:password) and `ha1b` MD5(username@realm:realm:password), the forms
    Kamailio's auth_db checks with calculate_ha1 = 0. A new realm needs a new password."""

    __tablename__ = "softphones"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    realm: Mapped[str] = mapped_column(String(200))
    ha1: Mapped[str] = mapped_column(String(32))
    ha1b: Mapped[str] = mapped_column(String(32))
    collector_id: Mapped[int | None] = mapped_column(ForeignKey("collectors.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)

    collector: Mapped[Collector | None] = relationship(lazy="joined")

    @validates("username")
    def _check_username(self, _key: str, value: str) -> str:
        # The name reaches Kamailio's db_text files and a SIP header: a strict alphabet.
        if not SOFTPHONE_USERNAME.fullmatch(value):
            raise ValueError(f"softphone username {value!r}: use 1-64 of a-z 0-9 . _ -")
        return value


USER_ROLES = ("collector", "supervisor", "compliance", "admin")
USER_NAME = re.compile(r"[a-z0-9._-]{1,64}")


class User(Base):
    """Someone who uses the HTTP API. A collector user is linked to a `Collector` row and sees
    only that collector's accounts. Only the SHA-256 of the API token is kept; a disabled user
    has none, so the old token is dead for good (see accounts/users.py)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    collector_id: Mapped[int | None] = mapped_column(ForeignKey("collectors.id"))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    token_created_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())

    collector: Mapped[Collector | None] = relationship(lazy="joined")

    @validates("name")
    def _check_name(self, _key: str, value: str) -> str:
        # Names end up in notes (author) and the audit log: a strict alphabet.
        if not USER_NAME.fullmatch(value):
            raise ValueError(f"user name {value!r}: use 1-64 of a-z 0-9 . _ -")
        return value

    @validates("role")
    def _check_role(self, _key: str, value: str) -> str:
        if value not in USER_ROLES:
            raise ValueError(f"role {value!r}: one of {', '.join(USER_ROLES)}")
        return value


class AuditEntry(Base):
    """One access to something sensitive: who (name and role as they were then), when (UTC),
    from where, what they did to what. Append-only: no code path updates or deletes a row,
    the ORM refuses to flush a change (accounts/audit.py) and database triggers refuse
    UPDATE and DELETE from anything else."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # None: command line
    user_name: Mapped[str] = mapped_column(String(100), index=True)
    role: Mapped[str] = mapped_column(String(16))
    client_addr: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


_AUDIT_APPEND_ONLY = "audit_log is append-only"
for _ddl in (
    DDL(
        "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
        f"BEGIN SELECT RAISE(ABORT, '{_AUDIT_APPEND_ONLY}'); END"
    ).execute_if(dialect="sqlite"),
    DDL(
        "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
        f"BEGIN SELECT RAISE(ABORT, '{_AUDIT_APPEND_ONLY}'); END"
    ).execute_if(dialect="sqlite"),
    DDL(
        "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger "
        f"LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{_AUDIT_APPEND_ONLY}'; END $$"
    ).execute_if(dialect="postgresql"),
    DDL(
        "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
    ).execute_if(dialect="postgresql"),
    DDL(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    ).execute_if(dialect="postgresql"),
):
    event.listen(AuditEntry.__table__, "after_create", _ddl)
