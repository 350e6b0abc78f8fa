"""Calls over HTTP: the live or stored transcript, and pausing the recording for card details.

PCI DSS: no card security codes in recordings. The collector on the call pauses; the recorder
then writes silence (the file keeps the call's timeline) and the gap is marked in the
recording's metadata. The request reaches the worker holding the call through the supervisor's
control channel (`app.state.fleet`); an API without a fleet (tests, tools) answers 503.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accounts import audit
from accounts.models import Account, Call, Transcript
from accounts.users import Principal
from voice.api.auth import client_addr, deny, requires, sees_account, sessions_of
from voice.api.notes import READERS
from voice.api.openapi import documented, error_responses, id_param
from voice.api.params import int_id

PAUSERS = ("collector", "supervisor", "admin")
_RESPONSES = {
    "200": {"description": "the recording is paused (or resumed); `at_s` is its time in it"},
    "409": {"description": "the call is not in progress, or not being recorded"},
    "503": {"description": "no call workers behind this API"},
    **error_responses("404"),
}


@requires(*PAUSERS)
@documented(parameters=[id_param("call_id")], responses=_RESPONSES)
async def pause_recording(request: Request, user: Principal) -> Response:
    """Pause the call's recording (silence is recorded instead) until resumed."""
    return JSONResponse(await set_pause(request, user, paused=True))


@requires(*PAUSERS)
@documented(parameters=[id_param("call_id")], responses=_RESPONSES)
async def resume_recording(request: Request, user: Principal) -> Response:
    """Resume the call's recording after a pause."""
    return JSONResponse(await set_pause(request, user, paused=False))


async def set_pause(request: Request, user: Principal, paused: bool) -> dict[str, Any]:
    """Pause or resume the recording of the call in the path (the API's and the live page's)."""
    call_id = int_id(request, "call_id")
    action = "recording.pause" if paused else "recording.resume"
    args = (sessions_of(request), user, client_addr(request), call_id, action)
    await run_in_threadpool(check_call_access, *args)
    fleet = getattr(request.app.state, "fleet", None)
    if fleet is None:
        raise HTTPException(503, "no call workers behind this API")
    try:
        result: dict[str, Any] = await fleet.pause_recording(call_id, paused)
    except LookupError as exc:
        raise HTTPException(409, str(exc)) from None
    return result


@requires(*READERS)
@documented(
    parameters=[id_param("call_id")],
    responses={
        "200": {
            "description": "the utterances stored so far (`segments`, time order, each with "
            "speaker, start/end seconds into the recording, text, confidence and word timings); "
            "while the call runs, `partial` holds each speaker's words in progress"
        },
        **error_responses("404"),
    },
)
async def call_transcript(request: Request, user: Principal) -> Response:
    """The call's transcript: live while it runs, stored once it has ended."""
    call_id = int_id(request, "call_id")
    args = (sessions_of(request), user, client_addr(request), call_id, "transcript.read")
    status = await run_in_threadpool(check_call_access, *args, require_live=False)
    return JSONResponse(await transcript_now(request, call_id, status))


async def transcript_now(request: Request, call_id: int, status: str) -> dict[str, Any]:
    """GET /api/calls/{id}/transcript's body, for a caller that checked access already (the
    live page polls it for its event stream and audits the read once)."""
    rows = await run_in_threadpool(_stored_transcript, sessions_of(request), call_id)
    body: dict[str, Any] = {"call_id": call_id, "status": status, "segments": rows, "partial": {}}
    fleet = getattr(request.app.state, "fleet", None)
    if status == "in_progress" and fleet is not None:
        try:
            live = await fleet.live_transcript(call_id)
        except LookupError:  # ended meanwhile, or no speech on this call: the stored rows stand
            live = {}
        body["partial"] = live.get("partial", {})
    return body


def _stored_transcript(sessions: sessionmaker[Session], call_id: int) -> list[dict[str, Any]]:
    with sessions() as session:
        return Transcript.of_call(session, call_id)


def check_call_access(
    sessions: sessionmaker[Session],
    user: Principal,
    addr: str | None,
    call_id: int,
    action: str,
    require_live: bool = True,
) -> str:
    """404 unless `user` may see the call; audit the access; 409 if it must be live and isn't."""
    with sessions() as session:
        call = session.get(Call, call_id)
        account = session.get(Account, call.account_id) if call and call.account_id else None
    if call is None or not sees_account(user, account.collector_id if account else None):
        deny(sessions, user, addr, "call", call_id, "no such call for this user")
        raise HTTPException(404, f"no call {call_id}")
    audit.record(sessions, user, addr, action, "call", call_id)
    if require_live and call.status != "in_progress":
        raise HTTPException(409, f"call {call_id} is {call.status}")
    return call.status


ROUTES = [
    Route("/calls/{call_id}/transcript", call_transcript, methods=["GET"]),
    Route("/calls/{call_id}/recording/pause", pause_recording, methods=["POST"]),
    Route("/calls/{call_id}/recording/resume", resume_recording, methods=["POST"]),
]
