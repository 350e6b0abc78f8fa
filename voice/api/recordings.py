"""Recordings over HTTP: search, CSV export rows, metadata, waveform peaks; the routes.

Collectors reach only recordings of calls on accounts assigned to them (404 otherwise, as if
the recording did not exist); supervisors, compliance and administrators reach all
(voice/api/recording_access.py). The audio, with HTTP Range, is voice/api/recording_audio.py;
checking integrity and legal holds, for compliance and administrators,
voice/api/recording_keep.py. Every access, refusal included, is an audit row written before
any of it leaves: if it cannot be written, nothing is served.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accounts import audit
from accounts.models import Recording
from accounts.users import Principal
from recordings.paths import UnsafePath
from recordings.peaks import NoAudio, peaks_of
from recordings.search import (
    MAX_LIMIT,
    RecordingFilter,
    RecordingInfo,
    RecordingSearch,
    Scope,
    SearchError,
)
from voice.api.auth import client_addr, config_of, requires, sessions_of
from voice.api.openapi import documented, error_responses, id_param, query_param
from voice.api.params import int_id, int_query, query, utc_query, utc_until
from voice.api.recording_access import (
    READERS,
    as_json,
    file_access,
    refuse_without_audio,
    visible,
)
from voice.api.recording_audio import get_audio
from voice.config import Config

EXPORT_MAX = 5000  # rows in one CSV export
SEARCH_PARAMS = ("account", "phone", "collector", "from", "to", "direction", "q", "order")
_STRING = {"type": "string"}


def _scope(user: Principal) -> Scope:
    return Scope.collector(user.collector_id) if user.role == "collector" else Scope.all()


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
    refuse_without_audio(sessions, user, addr, info)
    with sessions() as session:
        recording = session.get(Recording, rid)
    assert recording is not None  # visible() found it; rows are never deleted
    detail = {"account": info.account_number, "call_id": info.call_id}
    audit.record(sessions, user, addr, "recording.peaks", "recording", rid, detail)
    try:
        return peaks_of(recording, root)
    except (NoAudio, UnsafePath):
        raise HTTPException(404, f"recording {rid}: audio file missing (run verify)") from None


ROUTES = [
    Route("/recordings", search_recordings, methods=["GET"]),
    Route("/recordings/{recording_id}", get_recording, methods=["GET"]),
    Route("/recordings/{recording_id}/audio", get_audio, methods=["GET"]),
    Route("/recordings/{recording_id}/peaks", get_peaks, methods=["GET"]),
]
