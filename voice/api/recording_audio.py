"""A recording's audio over HTTP: HTTP Range (seeking), ETag/If-Range, ?download=1, HEAD.

The access rule is voice/api/recording_access.py; the play or download is an audit row written
before any byte leaves: if it cannot be written, nothing is served.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from accounts import audit
from accounts.models import Recording
from accounts.users import Principal
from recordings.paths import UnsafePath, open_for_reading, path_for
from recordings.search import RecordingInfo
from voice.api.auth import deny, requires
from voice.api.openapi import documented, error_responses, id_param, query_param
from voice.api.params import int_id, query
from voice.api.recording_access import READERS, file_access, refuse_without_audio, visible

CHUNK = 64 * 1024
MEDIA_TYPES = {"flac": "audio/flac", "wav": "audio/wav"}
_RANGE = re.compile(r"(\d{0,18})-(\d{0,18})")
_STRING = {"type": "string"}


class _Unsatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) byte of a single `bytes=` range, None to send the whole file.

    A unit other than bytes, or several ranges, is ignored (the whole file is sent, as
    RFC 9110 allows); a malformed or unsatisfiable byte range raises _Unsatisfiable."""
    if header is None:
        return None
    header = header.strip()
    if header[:6].lower() != "bytes=" or "," in header:
        return None
    match = _RANGE.fullmatch(header[6:].strip())
    if not match or not (match.group(1) or match.group(2)):
        raise _Unsatisfiable
    first, last = match.group(1), match.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise _Unsatisfiable
        return max(0, size - n), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        raise _Unsatisfiable
    return start, min(end, size - 1)


@requires(*READERS)
@documented(
    parameters=[
        id_param("recording_id"),
        query_param("download", "1: as an attachment (Content-Disposition)", _STRING),
        {"name": "Range", "in": "header", "schema": _STRING, "description": "bytes=first-last"},
    ],
    responses={
        "200": {"description": "the whole file", "content": {"audio/flac": {}}},
        "206": {"description": "the requested bytes (Content-Range)"},
        "409": {"description": "still recording"},
        "410": {"description": "deleted after its retention period"},
        "416": {"description": "the range cannot be satisfied"},
        **error_responses("404", "422"),
    },
)
async def get_audio(request: Request, user: Principal) -> Response:
    """The recording's audio; supports HTTP Range (seeking) and ?download=1.

    Collectors: only recordings of their own accounts' calls (404 otherwise)."""
    return await audio_response(request, user)


async def audio_response(request: Request, user: Principal) -> Response:
    """GET /api/recordings/{recording_id}/audio for `user` (the pages' player uses it too)."""
    rid = int_id(request, "recording_id")
    params = query(request, ("download",))
    if params.get("download", "1") not in ("0", "1"):
        raise HTTPException(422, "download must be 0 or 1")
    download = params.get("download") == "1"
    args = (*file_access(request, user), rid)
    info, audio, size = await run_in_threadpool(open_audio, *args, request, download)
    headers = {
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
    }
    if info.sha256:  # a finalised file never changes: its hash is a strong validator
        headers["ETag"] = f'"{info.sha256}"'
        digest = base64.b64encode(bytes.fromhex(info.sha256)).decode()
        headers["Repr-Digest"] = f"sha-256=:{digest}:"
    name = f"recording-{rid}.{info.format}"
    headers["Content-Disposition"] = f'{"attachment" if download else "inline"}; filename="{name}"'
    try:
        span = _wanted_range(request, info, size)
    except _Unsatisfiable:
        audio.close()
        headers["Content-Range"] = f"bytes */{size}"
        return Response(status_code=416, headers=headers)
    first, last = span if span is not None else (0, size - 1)
    headers["Content-Length"] = str(last - first + 1)
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    media = MEDIA_TYPES.get(info.format, "application/octet-stream")
    if request.method == "HEAD":
        audio.close()
        return Response(status_code=status, headers=headers, media_type=media)
    return StreamingResponse(
        _stream(audio, first, last), status_code=status, headers=headers, media_type=media
    )


def _wanted_range(request: Request, info: RecordingInfo, size: int) -> tuple[int, int] | None:
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != f'"{info.sha256}"':
        return None  # the client's copy is another file: send it whole
    return parse_range(request.headers.get("range"), size)


def open_audio(
    sessions: sessionmaker[Session],
    root: Path,
    user: Principal,
    addr: str | None,
    rid: int,
    request: Request,
    download: bool,
) -> tuple[RecordingInfo, BinaryIO, int]:
    info = visible(sessions, user, addr, rid)
    action = "recording.download" if download else "recording.play"
    detail: dict[str, Any] = {"account": info.account_number, "call_id": info.call_id}
    if request.headers.get("range"):
        detail["range"] = request.headers["range"][:100]
    refuse_without_audio(sessions, user, addr, info)
    with sessions() as session:
        rel = session.scalar(select(Recording.path).where(Recording.id == rid)) or ""
    try:
        # A file object, not a bare descriptor: closed even if the response is never sent.
        audio = os.fdopen(open_for_reading(path_for(rel, root)), "rb", buffering=0)
    except (UnsafePath, OSError):
        deny(sessions, user, addr, "recording", rid, "audio file missing", status=404)
        raise HTTPException(404, f"recording {rid}: audio file missing (run verify)") from None
    try:
        size = os.fstat(audio.fileno()).st_size
        # Audited before a byte is sent; if this fails, nothing is.
        audit.record(sessions, user, addr, action, "recording", rid, detail)
    except BaseException:
        audio.close()
        raise
    return info, audio, size


async def _stream(audio: BinaryIO, first: int, last: int) -> AsyncIterator[bytes]:
    try:
        offset = first
        while offset <= last:
            size = min(CHUNK, last - offset + 1)
            chunk = await anyio.to_thread.run_sync(os.pread, audio.fileno(), size, offset)
            if not chunk:
                break  # the file shrank: never happens to a finalised recording
            offset += len(chunk)
            yield chunk
    finally:
        audio.close()
