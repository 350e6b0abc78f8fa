"""Where recordings live on disk: one root folder, paths inside it built from ids only.

The database stores a recording's path relative to the root (`Recording.path`), so the folder
can move. A stored path is still treated as untrusted when it is turned back into a file: it
must name a file strictly inside the root, with no `..`, no absolute path, and no symlink that
leads out.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accounts.models import Recording
    from voice.config import Config

_EXT = re.compile(r"[a-z0-9]{1,8}(\.[a-z0-9]{1,8})?")
# What relative_path() produces; anything else stored in the database is refused.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class UnsafePath(ValueError):
    """A stored recording path that would resolve outside the recordings folder."""


def recordings_root(cfg: Config) -> Path:
    """`recordings.dir`, or `<data.dir>/recordings` when it is empty (absolute, resolved)."""
    return cfg.recordings_dir


def _positive_id(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def relative_path(call_id: int, recording_id: int, started_at: dt.datetime, ext: str) -> str:
    """`YYYY/MM/DD/call-<call_id>-rec-<recording_id>.<ext>` (UTC date of `started_at`).

    This is the value to store in `Recording.path`; `ext` is e.g. "flac" or "flac.part".
    """
    _positive_id("call_id", call_id)
    _positive_id("recording_id", recording_id)
    if started_at.tzinfo is None:
        raise ValueError(f"naive datetime {started_at!r}: pass a timezone-aware value")
    if not _EXT.fullmatch(ext):
        raise ValueError(f"extension {ext!r}: expected e.g. 'flac' or 'flac.part'")
    day = started_at.astimezone(dt.UTC)
    return f"{day:%Y/%m/%d}/call-{call_id}-rec-{recording_id}.{ext}"


def check_relative(stored: str) -> PurePosixPath:
    """`stored` as a clean relative path, or UnsafePath saying why it is refused."""
    if not stored or "\x00" in stored or "\\" in stored:
        raise UnsafePath(f"recording path {stored!r}: empty or contains NUL or backslash")
    rel = PurePosixPath(stored)
    if rel.is_absolute():
        raise UnsafePath(f"recording path {stored!r}: absolute")
    parts = stored.split("/")
    for part in parts:
        if part in ("", ".", "..") or not _SEGMENT.fullmatch(part):
            raise UnsafePath(f"recording path {stored!r}: bad component {part!r}")
    return rel


def path_for(recording: Recording | str, root: Path) -> Path:
    """The file of `recording` (or of a stored relative path) under `root`.

    Raises UnsafePath when the stored path, after following symlinks, is not inside `root`.
    The file need not exist (a deleted or missing recording still has a place).
    """
    stored = recording if isinstance(recording, str) else recording.path
    rel = check_relative(stored)
    real_root = root.resolve()
    candidate = (real_root / rel).resolve()  # follows symlinks, also in parent folders
    if candidate == real_root or not candidate.is_relative_to(real_root):
        raise UnsafePath(f"recording path {stored!r}: resolves outside the recordings folder")
    return candidate


def open_for_reading(path: Path) -> int:
    """A read-only descriptor of `path`, refusing a symlink swapped in since path_for()."""
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
