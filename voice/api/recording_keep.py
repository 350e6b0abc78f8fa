"""Recordings over HTTP, for compliance and administrators: integrity check and legal hold.

Both are audited in the same transaction or before the answer, as every recording access is
(voice/api/recording_access.py has the access rule, `visible`; voice/api/recordings.py the reads).
"""

from __future__ import annotations

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
from recordings.retention import RecordingDeleted, Retention
from recordings.search import RecordingInfo, RecordingSearch, Scope
from recordings.verify import verify
from voice.api.auth import client_addr, config_of, deny, requires, sessions_of
from voice.api.openapi import documented, error_responses, id_param, json_body
from voice.api.params import int_id, read_json
from voice.api.recording_access import as_json, file_access, visible
from voice.config import Config

KEEPERS = ("compliance", "admin")  # integrity checks and legal holds
MAX_REASON = 500


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
    args = (*file_access(request, user), rid)
    return JSONResponse(await run_in_threadpool(verify_for, *args))


def verify_for(
    sessions: sessionmaker[Session], root: Path, user: Principal, addr: str | None, rid: int
) -> dict[str, Any]:
    visible(sessions, user, addr, rid)
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
    reason = check_reason(await read_json(request))
    args = (sessions_of(request), config_of(request), user, client_addr(request), rid, True, reason)
    return JSONResponse(as_json(await run_in_threadpool(hold_for, *args)))


@requires(*KEEPERS)
@documented(
    parameters=[id_param("recording_id")],
    responses={"200": {"description": "the recording, hold lifted"}, **error_responses("404")},
)
async def release_recording(request: Request, user: Principal) -> Response:
    """Lift a legal hold: the recording is deleted once its retention period has passed."""
    rid = int_id(request, "recording_id")
    args = (sessions_of(request), config_of(request), user, client_addr(request), rid, False, None)
    return JSONResponse(as_json(await run_in_threadpool(hold_for, *args)))


def check_reason(data: dict[str, Any]) -> str:
    if set(data) != {"reason"}:
        raise HTTPException(422, 'expected exactly {"reason": "..."}')
    reason = data["reason"]
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise HTTPException(422, f"reason must be 1-{MAX_REASON} characters of text")
    if not reason.isprintable():
        raise HTTPException(422, "reason contains control characters")
    return reason


def hold_for(
    sessions: sessionmaker[Session],
    cfg: Config,
    user: Principal,
    addr: str | None,
    rid: int,
    held: bool,
    reason: str | None,
) -> RecordingInfo:
    visible(sessions, user, addr, rid)
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
    Route("/recordings/{recording_id}/verify", verify_recording, methods=["POST"]),
    Route("/recordings/{recording_id}/hold", hold_recording, methods=["PUT"]),
    Route("/recordings/{recording_id}/hold", release_recording, methods=["DELETE"]),
]
