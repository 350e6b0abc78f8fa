"""Recordings over HTTP: search, metadata, audio (HTTP Range), integrity check, legal hold.

Collectors reach only recordings of calls on accounts assigned to them (404 otherwise, as if
the recording did not exist); supervisors, compliance and administrators reach all. Checking
integrity and legal holds belong to compliance and administrators. Every access, refusal
included, is an audit row written before any audio leaves: if it cannot be written, nothing
is served.
"""

from __future__ import annotations

import base64
import datetime as dt
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
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from accounts import audit
from accounts.models import Recording
from accounts.users import Principal
from recordings.paths import UnsafePath, open_for_reading, path_for
from recordings.retention import RecordingDeleted, Retention
from recordings.search import RecordingFilter, RecordingInfo, RecordingSearch, Scope, SearchError
from recordings.verify import RecordingNotFound, verify
from voice.api.auth import client_addr, config_of, deny, requires, sees_account, sessions_of
from voice.api.openapi import documented, error_responses, id_param, json_body, query_param
from voice.api.params import int_id, int_query, query, read_json, utc_query
from voice.config import Config

READERS = ("collector", "supervisor", "compliance", "admin")
KEEPERS = ("compliance", "admin")  # integrity checks and legal holds
CHUNK = 64 * 1024
MAX_REASON = 500
MEDIA_TYPES = {"flac": "audio/flac", "wav": "audio/wav"}
_RANGE = re.compile(r"(\d{0,18})-(\d{0,18})")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SEARCH_PARAMS = ("account", "phone", "collector", "from", "to", "direction", "q")
_STRING = {"type": "string"}


def _scope(user: Principal) -> Scope:
    return Scope.collector(user.collector_id) if user.role == "collector" else Scope.all()


def _json(info: RecordingInfo) -> dict[str, Any]:
    out = info.to_json()
    out["audio_url"] = f"/api/recordings/{info.id}/audio"
    return out


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
    params = query(request, (*_SEARCH_PARAMS, "limit", "offset"))
    flt = _filter(params)
    args = (sessions_of(request), config_of(request), user, client_addr(request), flt, params)
    found = await run_in_threadpool(_search, *args)
    next_offset = flt.offset + flt.limit if len(found) == flt.limit else None
    return JSONResponse({"recordings": found, "next_offset": next_offset})


def _filter(params: dict[str, str]) -> RecordingFilter:
    for name in _SEARCH_PARAMS:
        value = params.get(name)
        if value is not None and not (0 < len(value) <= 200 and value.isprintable()):
            raise HTTPException(422, f"{name} must be 1-200 printable characters")
    end = utc_query(params, "to")
    if end is not None and _DATE.fullmatch(params["to"].strip()):
        end += dt.timedelta(days=1)  # a date means through the end of that day
    return RecordingFilter(
        account=params.get("account"),
        phone=params.get("phone"),
        collector=params.get("collector"),
        start=utc_query(params, "from"),
        end=end,
        direction=params.get("direction"),
        words=params.get("q"),
        limit=int_query(params, "limit", 50, 1, 500) or 50,
        offset=int_query(params, "offset", 0, 0, 10**9) or 0,
    )


def _search(
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
    return [_json(info) for info in found]


# -- one recording ------------------------------------------------------------------------


def _visible(
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
    info = await run_in_threadpool(_read, sessions_of(request), user, client_addr(request), rid)
    return JSONResponse(_json(info))


def _read(
    sessions: sessionmaker[Session], user: Principal, addr: str | None, rid: int
) -> RecordingInfo:
    info = _visible(sessions, user, addr, rid)
    detail = {"account": info.account_number, "call_id": info.call_id}
    audit.record(sessions, user, addr, "recording.read", "recording", rid, detail)
    return info


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
    rid = int_id(request, "recording_id")
    params = query(request, ("download",))
    if params.get("download", "1") not in ("0", "1"):
        raise HTTPException(422, "download must be 0 or 1")
    download = params.get("download") == "1"
    args = (
        sessions_of(request),
        config_of(request).recordings_dir,
        user,
        client_addr(request),
        rid,
    )
    info, audio, size = await run_in_threadpool(_open_audio, *args, request, download)
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


def _open_audio(
    sessions: sessionmaker[Session],
    root: Path,
    user: Principal,
    addr: str | None,
    rid: int,
    request: Request,
    download: bool,
) -> tuple[RecordingInfo, BinaryIO, int]:
    info = _visible(sessions, user, addr, rid)
    action = "recording.download" if download else "recording.play"
    detail: dict[str, Any] = {"account": info.account_number, "call_id": info.call_id}
    if request.headers.get("range"):
        detail["range"] = request.headers["range"][:100]
    if info.status == "deleted":
        deny(sessions, user, addr, "recording", rid, "audio deleted", status=410)
        raise HTTPException(410, f"recording {rid} was deleted after its retention period")
    if info.status == "recording":
        deny(sessions, user, addr, "recording", rid, "still recording", status=409)
        raise HTTPException(409, f"recording {rid} is still being recorded")
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


# -- integrity and legal hold -------------------------------------------------------------


@requires(*KEEPERS)
@documented(
    parameters=[id_param("recording_id")],
    responses={
        "200": {"description": "`ok` true when the file's SHA-256 equals the stored one"},
        **error_responses("404"),
    },
)
async def verify_recording(request: Request, user: Principal) -> Response:
    """Recompute the SHA-256 of the recording's file and compare it with the stored one."""
    rid = int_id(request, "recording_id")
    args = (
        sessions_of(request),
        config_of(request).recordings_dir,
        user,
        client_addr(request),
        rid,
    )
    return JSONResponse(await run_in_threadpool(_verify, *args))


def _verify(
    sessions: sessionmaker[Session], root: Path, user: Principal, addr: str | None, rid: int
) -> dict[str, Any]:
    _visible(sessions, user, addr, rid)
    with sessions() as session:
        recording = session.get(Recording, rid)
    assert recording is not None
    result = verify(recording, root)
    detail = {"result": result.result, "detail": result.detail}
    audit.record(sessions, user, addr, "recording.verify", "recording", rid, detail)
    return result.to_json()


@requires(*KEEPERS)
@documented(
    parameters=[id_param("recording_id")],
    requestBody=json_body(
        {
            "type": "object",
            "required": ["reason"],
            "additionalProperties": False,
            "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": MAX_REASON}},
        }
    ),
    responses={
        "200": {"description": "the recording, now on hold"},
        "409": {"description": "the audio was already deleted"},
        **error_responses("404", "422"),
    },
)
async def hold_recording(request: Request, user: Principal) -> Response:
    """Place a legal hold: the recording is not deleted, whatever its retention, until lifted."""
    rid = int_id(request, "recording_id")
    reason = _reason(await read_json(request))
    args = (sessions_of(request), config_of(request), user, client_addr(request), rid, True, reason)
    return JSONResponse(_json(await run_in_threadpool(_hold, *args)))


@requires(*KEEPERS)
@documented(
    parameters=[id_param("recording_id")],
    responses={"200": {"description": "the recording, hold lifted"}, **error_responses("404")},
)
async def release_recording(request: Request, user: Principal) -> Response:
    """Lift a legal hold: the recording is deleted once its retention period has passed."""
    rid = int_id(request, "recording_id")
    args = (sessions_of(request), config_of(request), user, client_addr(request), rid, False, None)
    return JSONResponse(_json(await run_in_threadpool(_hold, *args)))


def _reason(data: dict[str, Any]) -> str:
    if set(data) != {"reason"}:
        raise HTTPException(422, 'expected exactly {"reason": "..."}')
    reason = data["reason"]
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise HTTPException(422, f"reason must be 1-{MAX_REASON} characters of text")
    if not reason.isprintable():
        raise HTTPException(422, "reason contains control characters")
    return reason


def _hold(
    sessions: sessionmaker[Session],
    cfg: Config,
    user: Principal,
    addr: str | None,
    rid: int,
    held: bool,
    reason: str | None,
) -> RecordingInfo:
    _visible(sessions, user, addr, rid)
    action = "recording.hold" if held else "recording.release"

    def log(session: Session, changed: bool) -> None:
        detail: dict[str, Any] = {"changed": changed}
        if reason is not None:
            detail["reason"] = reason
        audit.record(session, user, addr, action, "recording", rid, detail)

    try:
        Retention.from_config(cfg, sessions).set_hold(rid, held, also=log)
    except RecordingDeleted as exc:
        deny(sessions, user, addr, "recording", rid, str(exc), status=409)
        raise HTTPException(409, str(exc)) from None
    return RecordingSearch(sessions).get(rid, Scope.all())


ROUTES = [
    Route("/recordings", search_recordings, methods=["GET"]),
    Route("/recordings/{recording_id}", get_recording, methods=["GET"]),
    Route("/recordings/{recording_id}/audio", get_audio, methods=["GET"]),
    Route("/recordings/{recording_id}/verify", verify_recording, methods=["POST"]),
    Route("/recordings/{recording_id}/hold", hold_recording, methods=["PUT"]),
    Route("/recordings/{recording_id}/hold", release_recording, methods=["DELETE"]),
]
