"""Integrity: a finalised recording's file must still hash to the SHA-256 stored at finalisation."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accounts.models import Recording
from recordings.paths import UnsafePath, open_for_reading, path_for

CHUNK = 1 << 20  # 1 MiB reads: a 1-hour 16 kHz FLAC is ~60 MB
# Statuses whose file is immutable and hashed (an interrupted call is repaired, then hashed).
VERIFIABLE = ("final", "interrupted")


class RecordingNotFound(LookupError):
    pass


@dataclass(frozen=True)
class Verification:
    recording_id: int
    # ok | mismatch (hash or size) | missing (no file) | unsafe (bad stored path)
    # | no_hash (nothing stored to compare) | not_final (still recording, or deleted)
    result: str
    expected: str | None
    actual: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.result == "ok"

    def to_json(self) -> dict[str, object]:
        return {
            "recording_id": self.recording_id,
            "ok": self.ok,
            "result": self.result,
            "expected_sha256": self.expected,
            "actual_sha256": self.actual,
            "detail": self.detail,
        }


def sha256_file(path: Path) -> tuple[str, int]:
    """Hex SHA-256 and size of the file at `path` (a symlink there is refused)."""
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(open_for_reading(path), "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def verify(recording: Recording, root: Path) -> Verification:
    """Recompute the hash of one recording's file and compare it with the stored one."""
    rid, expected = recording.id, recording.sha256
    if recording.status not in VERIFIABLE:
        return Verification(rid, "not_final", expected, detail=f"status {recording.status}")
    if not expected:
        return Verification(rid, "no_hash", None, detail="no SHA-256 stored")
    try:
        path = path_for(recording, root)
        actual, size = sha256_file(path)
    except UnsafePath as exc:
        return Verification(rid, "unsafe", expected, detail=str(exc))
    except FileNotFoundError:
        return Verification(rid, "missing", expected, detail=f"no file {recording.path}")
    except OSError as exc:  # e.g. ELOOP: a symlink where the file should be
        return Verification(rid, "missing", expected, detail=f"{recording.path}: {exc.strerror}")
    if actual != expected.lower():
        return Verification(rid, "mismatch", expected, actual, "SHA-256 differs")
    if recording.bytes is not None and size != recording.bytes:
        return Verification(
            rid, "mismatch", expected, actual, f"{size} bytes, {recording.bytes} stored"
        )
    return Verification(rid, "ok", expected, actual)


def verify_one(sessions: sessionmaker[Session], root: Path, recording_id: int) -> Verification:
    with sessions() as session:
        recording = session.get(Recording, recording_id)
    if recording is None:
        raise RecordingNotFound(f"no recording {recording_id}")
    return verify(recording, root)


def verify_all(
    sessions: sessionmaker[Session], root: Path, page: int = 500
) -> Iterator[Verification]:
    """Every final or interrupted recording, in id order, read a page at a time."""
    last = 0
    while True:
        stmt = (
            select(Recording)
            .where(Recording.status.in_(VERIFIABLE), Recording.id > last)
            .order_by(Recording.id)
            .limit(page)
        )
        with sessions() as session:
            rows = list(session.scalars(stmt))
        if not rows:
            return
        for recording in rows:
            yield verify(recording, root)
        last = rows[-1].id
