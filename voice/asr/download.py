"""Downloading a model archive for `voice models fetch` (voice/asr/fetch.py): streamed to a
file and hashed on the way, bounded in size and by the free disk, redirects never downgraded
to http, a progress bar on a terminal."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from voice.asr.archive import MB, Limits

CHUNK = 256 * 1024  # bytes per read from the network
SMALL_LIMIT = 4 * MB  # largest checksum file or model-list.json read
PROGRESS_EVERY = 0.1  # seconds between progress bar redraws
BAR_WIDTH = 24  # characters
USER_AGENT = "collections-voice (voice models fetch)"


class FetchError(Exception):
    """Download, verification, unpacking or installation failed; the message names the cause."""


@dataclass(frozen=True)
class Settings:
    base_url: str
    models_dir: Path
    timeout: float = 30.0  # seconds a connection may stall
    max_archive_bytes: int = 4096 * MB
    limits: Limits = field(default_factory=Limits)


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
    with open_url(opener, url, settings.timeout) as response:
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


def new_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_NoDowngrade())


@contextlib.contextmanager
def open_url(opener: urllib.request.OpenerDirector, url: str, timeout: float) -> Iterator[Any]:
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


def get_small(opener: urllib.request.OpenerDirector, url: str, timeout: float) -> str | None:
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


def _write(out: IO[bytes], chunk: bytes) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        raise FetchError(f"writing the download failed: {exc}; nothing installed") from None
