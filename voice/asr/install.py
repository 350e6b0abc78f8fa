"""Installing a downloaded model archive (voice/asr/fetch.py): unpacked by `voice.asr.archive`
into a temporary folder beside the destination, checked to look like a Vosk model, a
provenance record written into it, then renamed into place (an existing install swapped out by
renames); one fetch at a time per models folder, and nothing left behind on failure."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from voice.asr.archive import DIR_MODE, MB, ArchiveError, Limits, unpack
from voice.asr.checksums import Checksum
from voice.asr.download import FetchError

TEMP_PREFIX = ".fetch-"  # temporaries in the models folder; a later fetch removes stale ones
PROVENANCE = ".voice-model.json"  # written into each installed model: where it came from


@dataclass(frozen=True)
class Installed:
    name: str
    path: Path
    url: str
    size: int
    sha256: str
    checksum: Checksum | None  # None: installed unverified
    replaced: bool


def looks_like_model(folder: Path) -> bool:
    """A Vosk (Kaldi) model folder: an acoustic model and its feature configuration."""
    has_am = (folder / "am" / "final.mdl").is_file() or (folder / "final.mdl").is_file()
    has_conf = (folder / "conf").is_dir() or (folder / "mfcc.conf").is_file()
    return has_am and has_conf


def unpack_and_install(archive: Path, installed: Installed, limits: Limits, force: bool) -> bool:
    name, dest = installed.name, installed.path
    folder = dest.parent
    staging = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{name}-", suffix=".unpack", dir=folder))
    try:
        _check_unpacked_room(archive, folder)
        try:
            unpack(archive, staging, limits)
        except ArchiveError as exc:
            raise FetchError(f"refused to unpack {name}.zip: {exc}; nothing installed") from None
        except OSError as exc:
            raise FetchError(f"unpacking {name}.zip failed: {exc}; nothing installed") from None
        root = _model_root(staging, name)
        root.chmod(DIR_MODE)  # mkdtemp made it 0700; the server may run as another user
        _write_provenance(root, installed)
        return _install(root, dest, force)
    finally:
        _remove(staging)


def _model_root(staging: Path, name: str) -> Path:
    """The model inside the unpacked archive: at its top, or in its one top-level folder."""
    if looks_like_model(staging):
        return staging
    top = [p for p in staging.iterdir() if p.name != "__MACOSX"]
    if len(top) == 1 and top[0].is_dir() and looks_like_model(top[0]):
        return top[0]
    raise FetchError(
        f"{name}.zip does not hold a Vosk model (expected am/final.mdl and conf/, at the top or "
        "in one folder); nothing installed"
    )


def _install(root: Path, dest: Path, force: bool) -> bool:
    """Rename `root` to `dest`; with `force`, an existing `dest` is moved aside first."""
    try:
        if not (dest.exists() or dest.is_symlink()):
            os.rename(root, dest)
            return False
        if not force:
            raise FetchError(f"{dest} is already installed: pass --force to replace it")
        aside = Path(
            tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{dest.name}-", suffix=".old", dir=dest.parent)
        )
        os.rename(dest, aside / dest.name)
        try:
            os.rename(root, dest)
        except OSError:
            os.rename(aside / dest.name, dest)
            raise
        _remove(aside)
        return True
    except OSError as exc:
        raise FetchError(f"installing into {dest} failed: {exc}; nothing installed") from None


def _write_provenance(root: Path, installed: Installed) -> None:
    record: dict[str, Any] = {
        "name": installed.name,
        "url": installed.url,
        "bytes": installed.size,
        "sha256": installed.sha256,
        "verified_by": f"{installed.checksum.algorithm} from {installed.checksum.source}"
        if installed.checksum
        else None,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):  # informational only: the model works without it
        (root / PROVENANCE).write_text(json.dumps(record, indent=2) + "\n")


def read_provenance(model: Path) -> dict[str, Any]:
    try:
        record = json.loads((model / PROVENANCE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _check_unpacked_room(archive: Path, folder: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            needed = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError):
        return  # unpack() reports it with its cause
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise FetchError(
            f"the model unpacks to {needed / MB:.1f} MB but {folder} has {free / MB:.1f} MB free; "
            "nothing installed"
        )


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One fetch at a time per models folder; its stale temporaries are cleared meanwhile."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FetchError(f"another `voice models fetch` is running in {folder}") from None
        for stale in folder.glob(f"{TEMP_PREFIX}*"):
            _remove(stale)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def temp_archive(folder: Path, name: str) -> Iterator[tuple[Path, IO[bytes]]]:
    fd, path = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{name}-", suffix=".zip", dir=folder)
    out = os.fdopen(fd, "wb")
    try:
        yield Path(path), out
    finally:
        out.close()
        _remove(Path(path))


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
