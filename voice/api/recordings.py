"""Recordings over HTTP: search, metadata, audio (HTTP Range), integrity check, legal hold.

Collectors reach only recordings of calls on accounts assigned to them (404 otherwise, as if
the recording did not exist); supervisors, compliance and administrators reach all. Checking
integrity and legal holds belong to compliance and administrators (voice/api/recording_keep.py).
Every access, refusal included, is an audit row written before any audio leaves: if it cannot
be written, nothing is served.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from accounts import audit
from accounts.models import Recording
from accounts.users import Principal
from recordings.paths import UnsafePath, open_for_reading, path_for
from recordings.peaks import NoAudio, peaks_of
from recordings.search import (
    MAX_LIMIT,
    RecordingFilter,
    RecordingInfo,
    RecordingSearch,
    Scope,
    SearchError,
)
from recordings.verify import RecordingNotFound
from voice.api.auth import client_addr, config_of, deny, requires, sees_account, sessions_of
from voice.api.openapi import documented, error_responses, id_param, query_param
from voice.api.params import int_id, int_query, query, utc_query, utc_until
from voice.config import Config

READERS = ("collector", "supervisor", "compliance", "admin")
EXPORT_MAX = 5000  # rows in one CSV export
CHUNK = 64 * 1024
MEDIA_TYPES = {"flac": "audio/flac", "wav": "audio/wav"}
_RANGE = re.compile(r"(\d{0,18})-(\d{0,18})")
SEARCH_PARAMS = ("account", "phone", "collector", "from", "to", "direction", "q", "order")
_STRING = {"type": "string"}


def _scope(user: Principal) -> Scope:
    return Scope.collector(user.collector_id) if user.role == "collector" else Scope.all()


def as_json(info: RecordingInfo) -> dict[str, Any]:
    out = info.to_json()
    out["audio_url"] = f"/api/recordings/{info.id}/audio"
    return out


def file_access(
    request: Request, user: Principal
) -> tuple[sessionmaker[Session], Path, Principal, str | None]:
    """(sessions, recordings folder, user, client address): what every access to a recording's
    file takes (audio, peaks, verify), from the request."""
    return sessions_of(request), config_of(request).recordings_dir, user, client_addr(request)


# -- search -------------------------------------------------------------------------------


@requires(*READERS)
@documented(
    parameters=[
        query_param("account", "account number", _STRING),
        query_param("phone", "caller or callee, any spelling (normalised to E.164)", _STRING),
        query_param("collector", "the account's collector: id or exact name", _STRING),
        query_param("from", "started at or after (ISO 8601 with offset, or a date)", _STRING),
        query_param("to", "started before (a date: through the end of that day, UTC)", _STRING),
        query_param("direction", "inbound or outbound", _STRING),
        query_param("q", "words said on the call (all of them, in its transcript)", _STRING),
        query_param("order", "newest (default) or oldest first", _STRING),
        query_param("limit", "at most this many (default 50, at most 500)", {"type": "integer"}),
        query_param("offset", "skip this many (next page)", {"type": "integer"}),
    ],
    responses={
        "200": {"description": "newest first; `next_offset` pages on (null: no more)"},
        **error_responses("422"),
    },
)
async def search_recordings(request: Request, user: Principal) -> Response:
    """Search recordings.

    Collectors: only recordings of their own accounts' calls."""
    params = query(request, (*SEARCH_PARAMS, "limit", "offset"))
    flt = filter_from(params)
    args = (sessions_of(request), config_of(request), user, client_addr(request), flt, params)
    found = await run_in_threadpool(search_for, *args)
    next_offset = flt.offset + flt.limit if len(found) == flt.limit else None
    return JSONResponse({"recordings": found, "next_offset": next_offset})


def filter_from(params: dict[str, str]) -> RecordingFilter:
    for name in SEARCH_PARAMS:
        value = params.get(name)
        if value is not None and not (0 < len(value) <= 200 and value.isprintable()):
            raise HTTPException(422, f"{name} must be 1-200 printable characters")
    return RecordingFilter(
        account=params.get("account"),
        phone=params.get("phone"),
        collector=params.get("collector"),
        start=utc_query(params, "from"),
        end=utc_until(params, "to"),
        direction=params.get("direction"),
        words=params.get("q"),
        oldest_first=_oldest_first(params.get("order")),
        limit=int_query(params, "limit", 50, 1, 500) or 50,
        offset=int_query(params, "offset", 0, 0, 10**9) or 0,
    )


def _oldest_first(order: str | None) -> bool:
    if order not in (None, "newest", "oldest"):
        raise HTTPException(422, "order must be newest or oldest")
    return order == "oldest"


def search_for(
    sessions: sessionmaker[Session],
    cfg: Config,
    user: Principal,
    addr: str | None,
    flt: RecordingFilter,
    params: dict[str, str],
) -> list[dict[str, Any]]:
    try:
        found = RecordingSearch(sessions, cfg.accounts.default_region).search(flt, _scope(user))
    except SearchError as exc:
        raise HTTPException(422, str(exc)) from None
    detail = {"filters": params, "count": len(found), "ids": [r.id for r in found]}
    audit.record(sessions, user, addr, "recordings.search", "recording", None, detail)
    return [as_json(info) for info in found]


def export_for(
    sessions: sessionmaker[Session],
    cfg: Config,
    user: Principal,
    addr: str | None,
    flt: RecordingFilter,
    params: dict[str, str],
) -> list[RecordingInfo]:
    """Every recording the search finds, up to EXPORT_MAX, in its order (a CSV export);
    audited as `recordings.export` with the ids, before any of it is sent."""
    search = RecordingSearch(sessions, cfg.accounts.default_region)
    found: list[RecordingInfo] = []
    try:
        while len(found) < EXPORT_MAX:
            page = replace(flt, limit=MAX_LIMIT, offset=flt.offset + len(found))
            batch = search.search(page, _scope(user))
            found.extend(batch[: EXPORT_MAX - len(found)])
            if len(batch) < MAX_LIMIT:
                break
    except SearchError as exc:
        raise HTTPException(422, str(exc)) from None
    detail = {"filters": params, "count": len(found), "ids": [r.id for r in found]}
    audit.record(sessions, user, addr, "recordings.export", "recording", None, detail)
    return found


# -- one recording ------------------------------------------------------------------------


def visible(
    sessions: sessionmaker[Session], user: Principal, addr: str | None, recording_id: int
) -> RecordingInfo:
    """The recording if `user` may see it; otherwise the refusal is audited and 404 raised."""
    try:
        info = RecordingSearch(sessions).get(recording_id, Scope.all())
    except RecordingNotFound:
        deny(sessions, user, addr, "recording", recording_id, "no such recording")
        raise HTTPException(404, f"no recording {recording_id}") from None
    if not sees_account(user, info.collector_id):
        reason = "recording of an account not assigned to this collector"
        deny(sessions, user, addr, "recording", recording_id, reason)
        raise HTTPException(404, f"no recording {recording_id}")
    return info


@requires(*READERS)
@documented(parameters=[id_param("recording_id")], responses={**error_responses("404")})
async def get_recording(request: Request, user: Principal) -> Response:
    """One recording's metadata: call, account, duration, SHA-256, retention, hold.

    Collectors: only recordings of their own accounts' calls (404 otherwise)."""
    rid = int_id(request, "recording_id")
    info = await run_in_threadpool(read_for, sessions_of(request), user, client_addr(request), rid)
    return JSONResponse(as_json(info))


def read_for(
    sessions: sessionmaker[Session], user: Principal, addr: str | None, rid: int
) -> RecordingInfo:
    info = visible(sessions, user, addr, rid)
    detail = {"account": info.account_number, "call_id": info.call_id}
    audit.record(sessions, user, addr, "recording.read", "recording", rid, detail)
    return info


# -- waveform -----------------------------------------------------------------------------


@requires(*READERS)
@documented(
    parameters=[id_param("recording_id")],
    responses={
        "200": {
            "description": "waveform peaks computed once from the audio and cached: `lanes` "
            "(one per channel: customer and collector for a bridged call), each `peaks` 0..1 "
            "per `bucket_s` seconds, null inside a PCI pause"
        },
        "409": {"description": "still recording"},
        "410": {"description": "deleted after its retention period"},
        **error_responses("404"),
    },
)
async def get_peaks(request: Request, user: Principal) -> Response:
    """The recording's waveform peaks, per channel, for drawing a player.

    Collectors: only recordings of their own accounts' calls (404 otherwise)."""
    rid = int_id(request, "recording_id")
    return JSONResponse(await run_in_threadpool(peaks_for, *file_access(request, user), rid))


def peaks_for(
    sessions: sessionmaker[Session], root: Path, user: Principal, addr: str | None, rid: int
) -> dict[str, Any]:
    """The peaks if `user` may see the recording; audited like a read, before they are sent."""
    info = visible(sessions, user, addr, rid)
    _refuse_without_audio(sessions, user, addr, info)
    with sessions() as session:
        recording = session.get(Recording, rid)
    assert recording is not None  # visible() found it; rows are never deleted
    detail = {"account": info.account_number, "call_id": info.call_id}
    audit.record(sessions, user, addr, "recording.peaks", "recording", rid, detail)
    try:
        return peaks_of(recording, root)
    except (NoAudio, UnsafePath):
        raise HTTPException(404, f"recording {rid}: audio file missing (run verify)") from None


def _refuse_without_audio(
    sessions: sessionmaker[Session], user: Principal, addr: str | None, info: RecordingInfo
) -> None:
    rid = info.id
    if info.status == "deleted":
        deny(sessions, user, addr, "recording", rid, "audio deleted", status=410)
        raise HTTPException(410, f"recording {rid} was deleted after its retention period")
    if info.status == "recording":
        deny(sessions, user, addr, "recording", rid, "still recording", status=409)
        raise HTTPException(409, f"recording {rid} is still being recorded")


# -- audio --------------------------------------------------------------------------------


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
    _refuse_without_audio(sessions, user, addr, info)
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


ROUTES = [
    Route("/recordings", search_recordings, methods=["GET"]),
    Route("/recordings/{recording_id}", get_recording, methods=["GET"]),
    Route("/recordings/{recording_id}/audio", get_audio, methods=["GET"]),
    Route("/recordings/{recording_id}/peaks", get_peaks, methods=["GET"]),
]
