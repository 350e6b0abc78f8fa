"""`voice models fetch NAME`: download an official Vosk model archive, verify, unpack, install.

The archive `<base_url>/<NAME>.zip` streams into a temporary file inside the models folder
(hashed on the way), is checked against a checksum, unpacked by `voice.asr.archive` into a
temporary folder beside the destination, checked to look like a Vosk model, and only then
renamed into place as `<models_dir>/<NAME>`. Any failure removes what was written; an existing
install is untouched unless `force`, and then swapped out by renames.

Checksum, first found wins: the caller's `sha256`; `<base_url>/<NAME>.zip.sha256`; a line of
`<base_url>/SHA256SUMS`; the MD5 (and size) that `<base_url>/model-list.json` lists, which is
all the official site publishes. With none of these the fetch is refused unless the caller
allows an unverified install. A checksum from the same server catches damage in transit, not
a tampered server; `sha256` from a trusted source does both.

The steps live in `download` (streaming, progress, limits), `checksums` (what the archive is
checked against) and `install` (unpack, check, rename into place); this module puts them in
order and keeps the names callers import.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import IO

from voice.asr.archive import MB, Limits
from voice.asr.checksums import Checksum, check_sha256, find_published_checksum, verify
from voice.asr.download import FetchError, Progress, Settings, download, new_opener
from voice.asr.install import (
    PROVENANCE,
    Installed,
    locked,
    looks_like_model,
    read_provenance,
    temp_archive,
    unpack_and_install,
)

__all__ = [
    "MB",
    "PROVENANCE",
    "Checksum",
    "FetchError",
    "Installed",
    "Limits",
    "Progress",
    "Settings",
    "archive_url",
    "check_name",
    "check_sha256",
    "fetch_model",
    "looks_like_model",
    "read_provenance",
]

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid model name {name!r}: 1-128 of a-z 0-9 . _ - starting with a letter or "
            "digit (a name as published, e.g. vosk-model-small-en-us-0.15, never a path)"
        )
    return name


def archive_url(base_url: str, name: str) -> str:
    return f"{base_url.rstrip('/')}/{check_name(name)}.zip"


def fetch_model(
    name: str,
    settings: Settings,
    *,
    sha256: str | None = None,
    allow_unverified: bool = False,
    force: bool = False,
    progress: IO[str] | None = None,
) -> Installed:
    """Install model `name` into `settings.models_dir`; FetchError with the cause otherwise."""
    check_name(name)
    url = archive_url(settings.base_url, name)
    folder = settings.models_dir
    dest = folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(f"cannot create the models folder {folder}: {exc}") from None
    opener = new_opener()
    with locked(folder):
        if (dest.exists() or dest.is_symlink()) and not force:
            raise FetchError(f"{dest} is already installed: pass --force to replace it")
        if sha256:
            checksum: Checksum | None = Checksum("sha256", check_sha256(sha256), "--sha256")
        else:
            checksum = find_published_checksum(opener, settings.base_url, name, settings.timeout)
        if checksum is None and not allow_unverified:
            raise FetchError(
                f"no checksum for {name}.zip: none given (--sha256) and none published at "
                f"{settings.base_url} ({name}.zip.sha256, SHA256SUMS, model-list.json); "
                "pass --sha256 HEX, or --insecure-no-checksum to install it unverified"
            )
        algorithms = {"sha256", checksum.algorithm} if checksum else {"sha256"}
        out_to = progress if progress is not None else sys.stderr
        with temp_archive(folder, name) as (part, out):
            size, digests = download(opener, url, out, settings, algorithms, out_to)
            out.close()
            if checksum is not None:
                verify(checksum, size, digests)
            installed = Installed(name, dest, url, size, digests["sha256"], checksum, False)
            replaced = unpack_and_install(part, installed, settings.limits, force)
        return dataclasses.replace(installed, replaced=replaced)
