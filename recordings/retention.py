"""Retention and legal hold: recordings are kept `recordings.retention_days` from the call's
start (at least 3 years, 12 CFR 1006.100), longer while on legal hold, then deleted.

Deleting removes the audio only: the row stays, marked `deleted` with its SHA-256 and
`deleted_at`, so the audit trail still shows what existed and when it went.

A recording is deleted only if, at the moment of deletion and in the same transaction:
it is final or interrupted, not already deleted, not on hold, its `retain_until` has passed,
and its start is older than the configured retention (a wrong or missing `retain_until` can
delay a deletion but never bring one forward).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from accounts.models import Recording, utcnow
from recordings.paths import UnsafePath, path_for
from recordings.peaks import cache_for
from recordings.verify import VERIFIABLE, RecordingNotFound

if TYPE_CHECKING:
    from voice.config import Config, RecordingsConfig

log = logging.getLogger(__name__)


class RecordingDeleted(ValueError):
    """The recording's audio is already deleted: nothing left to hold."""


def retain_until_for(started_at: dt.datetime, cfg: Config | RecordingsConfig) -> dt.datetime:
    """Earliest moment a recording of a call that started at `started_at` may be deleted."""
    if started_at.tzinfo is None:
        raise ValueError(f"naive datetime {started_at!r}: pass a timezone-aware value")
    section: Any = getattr(cfg, "recordings", cfg)
    return started_at.astimezone(dt.UTC) + dt.timedelta(days=section.retention_days)


@dataclass
class PurgeResult:
    dry_run: bool
    deleted: list[int] = field(default_factory=list)  # ids (would be) deleted
    missing: list[int] = field(default_factory=list)  # deleted, but the file was already gone
    errors: list[tuple[int, str]] = field(default_factory=list)  # kept: could not delete


class Retention:
    def __init__(
        self, sessions: sessionmaker[Session], root: Path, retention_days: int, batch: int = 100
    ) -> None:
        self._sessions = sessions
        self._root = root
        self._days = retention_days
        self._batch = batch

    @classmethod
    def from_config(cls, cfg: Config, sessions: sessionmaker[Session]) -> Retention:
        r = cfg.recordings
        return cls(sessions, cfg.recordings_dir, r.retention_days, r.delete_batch)

    def _expired(self, now: dt.datetime) -> list[ColumnElement[bool]]:
        if now.tzinfo is None:
            raise ValueError(f"naive datetime {now!r}: pass a timezone-aware value")
        return [
            Recording.status.in_(VERIFIABLE),
            Recording.deleted_at.is_(None),
            Recording.legal_hold.is_(False),
            or_(Recording.retain_until.is_(None), Recording.retain_until <= now),
            Recording.started_at <= now - dt.timedelta(days=self._days),
        ]

    def due(self, now: dt.datetime, after: int = 0, limit: int | None = None) -> list[int]:
        """Ids of recordings that may be deleted at `now`, in id order."""
        stmt = select(Recording.id).where(*self._expired(now), Recording.id > after)
        stmt = stmt.order_by(Recording.id).limit(limit or self._batch)
        with self._sessions() as session:
            return list(session.scalars(stmt))

    def purge(self, now: dt.datetime, dry_run: bool = False) -> PurgeResult:
        """Delete the audio of every recording past retention and not on hold."""
        result = PurgeResult(dry_run)
        last = 0
        while ids := self.due(now, after=last):
            last = ids[-1]
            for rid in ids:
                if dry_run:
                    result.deleted.append(rid)
                else:
                    self._delete(rid, now, result)
        return result

    def _delete(self, rid: int, now: dt.datetime, result: PurgeResult) -> None:
        try:
            with self._sessions.begin() as session:
                # The guarded UPDATE re-checks every condition and locks the row, so a hold
                # placed meanwhile either wins (nothing updated) or waits and finds it deleted.
                changed = session.execute(
                    update(Recording)
                    .where(Recording.id == rid, *self._expired(now))
                    .values(status="deleted", deleted_at=now)
                    .execution_options(synchronize_session=False)
                )
                if changed.rowcount != 1:
                    return
                stored = session.scalar(select(Recording.path).where(Recording.id == rid))
                path = path_for(stored or "", self._root)
                # Unlink before commit: a crash in between leaves the row due, and the next
                # purge finishes the job (FileNotFoundError is then expected).
                try:
                    path.unlink()
                except FileNotFoundError:
                    result.missing.append(rid)
                cache_for(path).unlink(missing_ok=True)  # the waveform goes with the audio
        except (UnsafePath, OSError) as exc:
            result.errors.append((rid, str(exc)))
            return
        result.deleted.append(rid)
        _prune_empty_dirs(path.parent, self._root.resolve())

    def set_hold(
        self,
        recording_id: int,
        held: bool,
        also: Callable[[Session, bool], None] | None = None,
    ) -> bool:
        """Place (True) or lift (False) a legal hold; False if it was already so.

        `also(session, changed)` runs in the same transaction (an audit row: both or neither).
        Holding a recording whose audio is already deleted raises RecordingDeleted.
        """
        guard = [Recording.id == recording_id, Recording.legal_hold.is_(not held)]
        if held:
            guard.append(Recording.deleted_at.is_(None))
        with self._sessions.begin() as session:
            # One guarded UPDATE (no read first): it serialises with purge's UPDATE.
            changed = session.execute(
                update(Recording)
                .where(*guard)
                .values(legal_hold=held)
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount != 1:
                row = session.execute(
                    select(Recording.legal_hold, Recording.deleted_at).where(
                        Recording.id == recording_id
                    )
                ).first()
                if row is None:
                    raise RecordingNotFound(f"no recording {recording_id}")
                if held and row.deleted_at is not None and not row.legal_hold:
                    raise RecordingDeleted(
                        f"recording {recording_id} was deleted at "
                        f"{row.deleted_at:%Y-%m-%d %H:%M} UTC"
                    )
            if also is not None:
                also(session, changed.rowcount == 1)
            return changed.rowcount == 1


def _prune_empty_dirs(folder: Path, root: Path) -> None:
    # Day/month/year folders emptied by purging: remove them, never the root itself.
    while folder != root and folder.is_relative_to(root):
        try:
            os.rmdir(folder)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise
            if exc.errno != errno.ENOENT:
                return
        folder = folder.parent


PURGE_INTERVAL = 3600.0  # seconds between retention passes: deletion is due by the day, not second


async def run_purge(
    cfg: Config,
    stop_event: asyncio.Event,
    sessions: sessionmaker[Session] | None = None,
    clock: Callable[[], dt.datetime] = utcnow,
    interval: float = PURGE_INTERVAL,
) -> None:
    """Purge recordings past retention every `interval` seconds until `stop_event` is set.

    A pass that deletes something leaves one audit row (actor `cli`, action
    `recordings.purge`); a failing pass is logged and retried at the next interval.
    """
    from accounts import audit

    engine = None
    if sessions is None:
        from accounts.db import make_engine, make_sessions

        engine = make_engine(cfg.database_url, cfg.database.busy_timeout_ms)
        sessions = make_sessions(engine)
    retention = Retention.from_config(cfg, sessions)

    def one_pass() -> None:
        result = retention.purge(clock())
        if result.deleted or result.errors:
            detail = {
                "deleted": result.deleted,
                "already_missing": result.missing,
                "errors": [rid for rid, _ in result.errors],
                "retention_days": cfg.recordings.retention_days,
            }
            audit.record(sessions, None, None, "recordings.purge", "recording", None, detail)
        for rid, error in result.errors:
            log.error("recording %d past retention not deleted: %s", rid, error)

    try:
        while not stop_event.is_set():
            try:
                await asyncio.to_thread(one_pass)
            except Exception:
                log.exception("retention pass failed; next in %gs", interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), interval)
    finally:
        if engine is not None:
            engine.dispose()
