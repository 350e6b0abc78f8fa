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
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from voice.asr.archive import DIR_MODE, MB, ArchiveError, Limits, unpack

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
MD5_RE = re.compile(r"[0-9a-f]{32}")
CHUNK = 256 * 1024  # bytes per read from the network
SMALL_LIMIT = 4 * MB  # largest checksum file or model-list.json read
PROGRESS_EVERY = 0.1  # seconds between progress bar redraws
BAR_WIDTH = 24  # characters
TEMP_PREFIX = ".fetch-"  # temporaries in the models folder; a later fetch removes stale ones
PROVENANCE = ".voice-model.json"  # written into each installed model: where it came from
USER_AGENT = "collections-voice (voice models fetch)"


class FetchError(Exception):
    """Download, verification, unpacking or installation failed; the message names the cause."""


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # "sha256" or "md5"
    hexdigest: str
    source: str  # "--sha256" or the URL it was published at
    size: int | None = None  # bytes, when the publisher lists it


@dataclass(frozen=True)
class Settings:
    base_url: str
    models_dir: Path
    timeout: float = 30.0  # seconds a connection may stall
    max_archive_bytes: int = 4096 * MB
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True)
class Installed:
    name: str
    path: Path
    url: str
    size: int
    sha256: str
    checksum: Checksum | None  # None: installed unverified
    replaced: bool


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid model name {name!r}: 1-128 of a-z 0-9 . _ - starting with a letter or "
            "digit (a name as published, e.g. vosk-model-small-en-us-0.15, never a path)"
        )
    return name


def check_sha256(text: str) -> str:
    hexdigest = text.strip().lower()
    if not SHA256_RE.fullmatch(hexdigest):
        raise ValueError(f"--sha256: expected 64 hex digits, got {text!r}")
    return hexdigest


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
    opener = _opener()
    with _locked(folder):
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
        with _temp_archive(folder, name) as (part, out):
            size, digests = download(opener, url, out, settings, algorithms, out_to)
            out.close()
            if checksum is not None:
                verify(checksum, size, digests)
            installed = Installed(name, dest, url, size, digests["sha256"], checksum, False)
            replaced = _unpack_and_install(part, installed, settings.limits, force)
        return dataclasses.replace(installed, replaced=replaced)


def find_published_checksum(
    opener: urllib.request.OpenerDirector, base_url: str, name: str, timeout: float
) -> Checksum | None:
    """What the server publishes for `<name>.zip`, or None (absent or not understood)."""
    base, archive = base_url.rstrip("/"), f"{name}.zip"
    url = f"{base}/{archive}.sha256"
    text = _get_small(opener, url, timeout)
    if text is not None and (found := _sums_entry(text, archive, lone_ok=True)):
        return Checksum("sha256", found, url)
    url = f"{base}/SHA256SUMS"
    text = _get_small(opener, url, timeout)
    if text is not None and (found := _sums_entry(text, archive, lone_ok=False)):
        return Checksum("sha256", found, url)
    url = f"{base}/model-list.json"
    text = _get_small(opener, url, timeout)
    return _model_list_entry(text, name, url) if text is not None else None


def _sums_entry(text: str, archive: str, lone_ok: bool) -> str | None:
    """The hex digest for `archive` in `sha256sum` output ("HEX  NAME" or "HEX *NAME")."""
    for line in text.splitlines():
        fields = line.split()
        if not fields or not SHA256_RE.fullmatch(fields[0].lower()):
            continue
        if len(fields) == 1 and lone_ok:
            return fields[0].lower()
        if len(fields) == 2 and fields[1].lstrip("*").rsplit("/", 1)[-1] == archive:
            return fields[0].lower()
    return None


def _model_list_entry(text: str, name: str, url: str) -> Checksum | None:
    try:
        models = json.loads(text)
    except ValueError:
        return None
    for model in models if isinstance(models, list) else []:
        if isinstance(model, dict) and model.get("name") == name:
            md5 = str(model.get("md5", "")).lower()
            size = model.get("size")
            if MD5_RE.fullmatch(md5):
                return Checksum("md5", md5, url, size if isinstance(size, int) else None)
    return None


def download(
    opener: urllib.request.OpenerDirector,
    url: str,
    out: IO[bytes],
    settings: Settings,
    algorithms: set[str],
    progress: IO[str],
) -> tuple[int, dict[str, str]]:
    """Stream `url` into `out`; return (bytes, {algorithm: hexdigest}). FetchError on failure."""
    hashes = {alg: hashlib.new(alg, usedforsecurity=False) for alg in algorithms}
    with _open(opener, url, settings.timeout) as response:
        length = _content_length(response)
        _check_room(length, settings, settings.models_dir)
        bar = Progress(progress, url.rsplit("/", 1)[-1], length)
        received, complete = 0, False
        try:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (http.client.HTTPException, OSError) as exc:
                    raise FetchError(
                        f"download of {url} broke off after {received} bytes "
                        f"({type(exc).__name__}: {exc}); nothing installed"
                    ) from None
                if not chunk:
                    break
                received += len(chunk)
                if received > settings.max_archive_bytes:
                    raise FetchError(
                        f"{url} is larger than asr.max_archive_mb "
                        f"({settings.max_archive_bytes // MB} MB); nothing installed"
                    )
                for h in hashes.values():
                    h.update(chunk)
                _write(out, chunk)
                bar.update(received)
            complete = True
        finally:
            bar.finish(received, complete)
    if length is not None and received < length:
        raise FetchError(
            f"download of {url} truncated: received {received} of {length} bytes "
            "(connection closed early); nothing installed"
        )
    return received, {alg: h.hexdigest() for alg, h in hashes.items()}


def verify(checksum: Checksum, size: int, digests: dict[str, str]) -> None:
    if checksum.size is not None and checksum.size != size:
        raise FetchError(
            f"size mismatch: {checksum.source} lists {checksum.size} bytes, received {size}; "
            "nothing installed"
        )
    actual = digests[checksum.algorithm]
    if actual != checksum.hexdigest:
        raise FetchError(
            f"checksum mismatch: expected {checksum.algorithm} {checksum.hexdigest} "
            f"(from {checksum.source}), the archive has {actual}; nothing installed"
        )


def looks_like_model(folder: Path) -> bool:
    """A Vosk (Kaldi) model folder: an acoustic model and its feature configuration."""
    has_am = (folder / "am" / "final.mdl").is_file() or (folder / "final.mdl").is_file()
    has_conf = (folder / "conf").is_dir() or (folder / "mfcc.conf").is_file()
    return has_am and has_conf


def _unpack_and_install(archive: Path, installed: Installed, limits: Limits, force: bool) -> bool:
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


class Progress:
    """Download progress on a terminal: a redrawn bar; elsewhere only a final line."""

    def __init__(self, out: IO[str], label: str, total: int | None) -> None:
        self.out, self.label, self.total = out, label, total
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.started = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.tty and now - self.last >= PROGRESS_EVERY:
            self.last = now
            self.out.write(f"\r{self.line(done)}")
            self.out.flush()

    def finish(self, done: int, complete: bool = True) -> None:
        seconds = time.monotonic() - self.started
        if complete:
            start = "\r" if self.tty else ""
            self.out.write(f"{start}{self.line(done)} in {seconds:.1f} s\n")
        elif self.tty:
            self.out.write("\n")  # keep the error message off the bar's line
        self.out.flush()

    def line(self, done: int) -> str:
        if not self.total:
            return f"{self.label}  {done / MB:.1f} MB ({done} bytes)"
        fraction = min(done / self.total, 1.0)
        filled = int(fraction * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return (
            f"{self.label}  [{bar}] {fraction * 100:3.0f}%  "
            f"{done / MB:.1f} / {self.total / MB:.1f} MB"
        )


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never from https to http nor to another scheme."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        old, new = req.full_url.split(":", 1)[0].lower(), newurl.split(":", 1)[0].lower()
        if new not in ("http", "https") or (old == "https" and new == "http"):
            raise FetchError(f"{req.full_url} redirects to {newurl}: refused (scheme downgrade)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_NoDowngrade())


@contextlib.contextmanager
def _open(opener: urllib.request.OpenerDirector, url: str, timeout: float) -> Iterator[Any]:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        hint = ": is the model name right?" if exc.code == 404 else ""
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}{hint}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot download {url}: {exc.reason}") from None
    except (http.client.HTTPException, OSError) as exc:
        raise FetchError(f"cannot download {url}: {type(exc).__name__}: {exc}") from None
    with response:
        yield response


def _get_small(opener: urllib.request.OpenerDirector, url: str, timeout: float) -> str | None:
    """A small text file, or None if the server has none (any HTTP error status, no such file)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with opener.open(request, timeout=timeout) as response:
            data = response.read(SMALL_LIMIT + 1)
    except urllib.error.HTTPError as exc:
        exc.close()
        return None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, FileNotFoundError | NotADirectoryError):
            return None
        raise FetchError(f"cannot reach {url}: {exc.reason}") from None
    except (http.client.HTTPException, OSError) as exc:
        raise FetchError(f"cannot read {url}: {type(exc).__name__}: {exc}") from None
    if len(data) > SMALL_LIMIT:
        return None
    return data.decode("utf-8", "replace")


def _content_length(response: Any) -> int | None:
    try:
        length = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


def _check_room(length: int | None, settings: Settings, folder: Path) -> None:
    if length is None:
        return
    if length > settings.max_archive_bytes:
        raise FetchError(
            f"the archive is {length / MB:.1f} MB, more than asr.max_archive_mb "
            f"({settings.max_archive_bytes // MB} MB); nothing downloaded"
        )
    free = shutil.disk_usage(folder).free
    if length > free:
        raise FetchError(
            f"the archive is {length / MB:.1f} MB but {folder} has {free / MB:.1f} MB free"
        )


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


def _write(out: IO[bytes], chunk: bytes) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        raise FetchError(f"writing the download failed: {exc}; nothing installed") from None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
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
def _temp_archive(folder: Path, name: str) -> Iterator[tuple[Path, IO[bytes]]]:
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
