"""The checksum a model archive is verified against (voice/asr/fetch.py): the caller's
`--sha256`, else what the server publishes (`<NAME>.zip.sha256`, `SHA256SUMS`, the MD5 and
size in `model-list.json`), and the comparison with what was downloaded."""

from __future__ import annotations

import json
import re
import urllib.request
from dataclasses import dataclass

from voice.asr.download import FetchError, get_small

SHA256_RE = re.compile(r"[0-9a-f]{64}")
MD5_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # "sha256" or "md5"
    hexdigest: str
    source: str  # "--sha256" or the URL it was published at
    size: int | None = None  # bytes, when the publisher lists it


def check_sha256(text: str) -> str:
    hexdigest = text.strip().lower()
    if not SHA256_RE.fullmatch(hexdigest):
        raise ValueError(f"--sha256: expected 64 hex digits, got {text!r}")
    return hexdigest


def find_published_checksum(
    opener: urllib.request.OpenerDirector, base_url: str, name: str, timeout: float
) -> Checksum | None:
    """What the server publishes for `<name>.zip`, or None (absent or not understood)."""
    base, archive = base_url.rstrip("/"), f"{name}.zip"
    url = f"{base}/{archive}.sha256"
    text = get_small(opener, url, timeout)
    if text is not None and (found := _sums_entry(text, archive, lone_ok=True)):
        return Checksum("sha256", found, url)
    url = f"{base}/SHA256SUMS"
    text = get_small(opener, url, timeout)
    if text is not None and (found := _sums_entry(text, archive, lone_ok=False)):
        return Checksum("sha256", found, url)
    url = f"{base}/model-list.json"
    text = get_small(opener, url, timeout)
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
