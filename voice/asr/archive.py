"""Unpacking a downloaded model archive without trusting it.

Every entry is checked before anything is written: no entry may leave the target folder
(`..`, absolute paths, drive letters, backslashes), only regular files and folders (a symlink
entry is refused), no encryption, and the entry count and total declared size are capped (zip
bombs). While writing, the bytes actually produced are counted too, so an entry that inflates
past its declared size stops the unpack.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20  # 1 MiB per read while inflating
MB = 1 << 20
FILE_MODE = 0o644  # archive permission bits are ignored: no setuid, no executables
DIR_MODE = 0o755
UNIX = 3  # ZipInfo.create_system of archives made on Unix (mode bits in external_attr)
_DRIVE = re.compile(r"^[A-Za-z]:")


class ArchiveError(Exception):
    """The archive is unsafe, damaged or too large; the message says which entry and why."""


@dataclass(frozen=True)
class Limits:
    max_files: int = 5000
    max_unpacked_bytes: int = 16384 * MB


def entry_parts(name: str) -> tuple[str, ...]:
    """The path components of an archive entry name; ArchiveError if it could leave the folder."""
    if "\x00" in name:
        raise ArchiveError(f"entry {name!r}: NUL in name")
    if "\\" in name:
        raise ArchiveError(f"entry {name!r}: backslash in name (Windows path)")
    if name.startswith("/"):
        raise ArchiveError(f"entry {name!r}: absolute path")
    if _DRIVE.match(name):
        raise ArchiveError(f"entry {name!r}: drive letter")
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"entry {name!r}: '..' would leave the target folder")
    return parts


def _check_kind(info: zipfile.ZipInfo) -> None:
    if info.flag_bits & 0x1:
        raise ArchiveError(f"entry {info.filename!r}: encrypted")
    mode = info.external_attr >> 16
    if info.create_system != UNIX or not mode:
        return
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"entry {info.filename!r}: symbolic link")
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise ArchiveError(f"entry {info.filename!r}: not a regular file or folder")


def plan(zf: zipfile.ZipFile, limits: Limits) -> list[tuple[tuple[str, ...], zipfile.ZipInfo]]:
    """Every entry with its checked path, or ArchiveError before anything is written."""
    infos = zf.infolist()
    if len(infos) > limits.max_files:
        raise ArchiveError(f"{len(infos)} entries, more than the limit of {limits.max_files}")
    total = sum(info.file_size for info in infos)
    if total > limits.max_unpacked_bytes:
        raise ArchiveError(
            f"unpacks to {total / MB:.1f} MB, more than the limit of "
            f"{limits.max_unpacked_bytes / MB:.0f} MB"
        )
    entries, files, folders = [], set(), set()
    for info in infos:
        _check_kind(info)
        parts = entry_parts(info.filename)
        if not parts:
            continue
        if not info.is_dir():
            if parts in files:
                raise ArchiveError(f"entry {info.filename!r}: appears twice")
            files.add(parts)
        depth = len(parts) if info.is_dir() else len(parts) - 1
        folders.update(parts[:i] for i in range(1, depth + 1))
        entries.append((parts, info))
    clash = files & folders
    if clash:
        raise ArchiveError(f"entry {'/'.join(min(clash))!r}: both a file and a folder")
    return entries


def unpack(archive: Path, into: Path, limits: Limits) -> int:
    """Extract `archive` into the existing empty folder `into`; return the bytes written."""
    try:
        with zipfile.ZipFile(archive) as zf:
            entries = plan(zf, limits)
            written = 0
            for parts, info in entries:
                target = into.joinpath(*parts)
                if info.is_dir():
                    target.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                written += _extract(zf, info, target, limits.max_unpacked_bytes - written)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"not a valid zip archive ({exc})") from None
    except (NotImplementedError, EOFError, zipfile.LargeZipFile) as exc:
        raise ArchiveError(f"cannot unpack: {exc}") from None
    return written


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    allowed = min(info.file_size, budget)
    written = 0
    with zf.open(info) as src, os.fdopen(os.open(target, flags, FILE_MODE), "wb") as dst:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > allowed:
                raise ArchiveError(f"entry {info.filename!r}: inflates past its declared size")
            dst.write(chunk)
    return written
