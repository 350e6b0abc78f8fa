"""The audit log: who accessed or changed what, when, and from where. Append-only.

Call `record(...)` for every access to something sensitive (a recording, a transcript, a note)
and every refusal of one. Pass the request's open `Session` when the access itself writes (the
row then commits or rolls back with it), or the `sessionmaker` to append on its own.
A failure to record must fail the access, so nothing here swallows errors.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from accounts.models import AuditEntry

# Recorded for actions taken on the command line (`voice users ...`), which has no API user.
CLI_ACTOR = "cli"
CLI_ROLE = "system"
MAX_LIMIT = 1000


class Actor(Protocol):
    """Whoever acts: an API principal or a `User` row."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...


@dataclass(frozen=True)
class SystemActor:
    """A part of the server acting on its own (the IVR journaling a caller's failed
    verification): no user row, its name and role "system" in the log."""

    name: str
    role: str = CLI_ROLE
    id: None = None


class AuditLogIsAppendOnly(RuntimeError):
    pass


def record(
    sessions: Session | sessionmaker[Session],
    user: Actor | SystemActor | None,
    client_addr: str | None,
    action: str,
    target_type: str,
    target_id: str | int | None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one row. `user` None means the command line. With a `Session` the row is added
    to it (the caller commits); with a `sessionmaker` it is committed before this returns."""
    entry = AuditEntry(
        user_id=user.id if user is not None else None,
        user_name=user.name if user is not None else CLI_ACTOR,
        role=user.role if user is not None else CLI_ROLE,
        client_addr=client_addr,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        detail=detail or {},
    )
    if isinstance(sessions, Session):
        sessions.add(entry)
        sessions.flush()
        return entry
    with sessions.begin() as session:
        session.add(entry)
    return entry


def entries(
    sessions: sessionmaker[Session],
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    user: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    after_id: int | None = None,
    limit: int = 200,
) -> list[AuditEntry]:
    """Rows in the order they were written, filtered; `after_id` pages on from a previous page.
    `until` is exclusive; `target_id` counts only with `target_type` (ids of one kind)."""
    stmt = select(AuditEntry).order_by(AuditEntry.id).limit(max(1, min(limit, MAX_LIMIT)))
    if since is not None:
        stmt = stmt.where(AuditEntry.at >= since)
    if until is not None:
        stmt = stmt.where(AuditEntry.at < until)
    if target_type is not None:
        stmt = stmt.where(AuditEntry.target_type == target_type)
        if target_id is not None:
            stmt = stmt.where(AuditEntry.target_id == target_id)
    if user is not None:
        stmt = stmt.where(AuditEntry.user_name == user)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    if after_id is not None:
        stmt = stmt.where(AuditEntry.id > after_id)
    with sessions() as session:
        return list(session.scalars(stmt))


def latest(
    sessions: sessionmaker[Session], action: str, target_type: str, target_id: str | int
) -> AuditEntry | None:
    """The newest row of `action` on one target (e.g. when a recording was last verified)."""
    stmt = (
        select(AuditEntry)
        .where(
            AuditEntry.action == action,
            AuditEntry.target_type == target_type,
            AuditEntry.target_id == str(target_id),
        )
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )
    with sessions() as session:
        return session.scalar(stmt)


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "user": entry.user_name,
        "role": entry.role,
        "client_addr": entry.client_addr,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "detail": entry.detail,
    }


@event.listens_for(Session, "before_flush")
def _refuse_changes(session: Session, _context: Any, _instances: Any) -> None:
    # The database triggers refuse UPDATE/DELETE too; this names the mistake at its source.
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditEntry) and (obj in session.deleted or session.is_modified(obj)):
            raise AuditLogIsAppendOnly(f"audit entry {obj.id} cannot be changed or deleted")
