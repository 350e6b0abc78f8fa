"""Make a Call and the live call: `POST /calls`, `/calls/{id}` and its event stream.

- `POST /calls` (the Make a Call button: account, to) runs the API's own service
  (voice/api/dialout.py `place`: the same checks, guardrails, reservation and audit) and
  answers 303 to `/calls/{id}`; a refusal is a page saying why and from when.
- `/calls/{id}` shows the call as GET /api/calls/{id} and /transcript do (their functions),
  the PCI Pause / Resume buttons (voice/api/calls.py `set_pause`) and the outcome form
  (voice/api/outcomes.py `mark_call`); after hang-up, the recording and the final transcript.
- `/calls/{id}/events` is a Server-Sent Events stream (voice/pages/static/livecall.js):
  `status` when the call's progress changes, `transcript` when what was said changes, `end`
  once the call has ended and its transcript settled. Access is checked and audited once
  when the stream opens (`call.read`, `transcript.read`), then polled without new audit rows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from accounts import audit
from accounts.models import utcnow
from accounts.users import Principal
from voice.api.auth import client_addr, sessions_of
from voice.api.calls import PAUSERS, check_call_access, set_pause, transcript_now
from voice.api.dialout import DIALERS, Refused, call_state, place
from voice.api.notes import READERS, call_detail
from voice.api.outcomes import CALLERS
from voice.api.params import int_id
from voice.pages.outcome_form import EMPTY, outcome_post
from voice.pages.web import SECURITY_HEADERS, page, read_form, render, see_other

POLL_S = 0.25  # how often the stream looks at the call (the transcript grows per utterance)
SETTLE_S = 8.0  # after hang-up, how long the stream waits for the last utterances
# A placed call's rows go behind it (the worker's write-behind): the browser is sent to its
# page once they are in, so the page finds it; a browser waits longer than an API client.
VISIBLE_S = 20.0
MAX_STREAM_S = 4 * 3600.0  # a stream never outlives this, whatever the call does


@page(*DIALERS)
async def make_call(request: Request, user: Principal) -> Response:
    form = await read_form(request)
    number, to = str(form.get("account", "")), str(form.get("to", "")) or None
    if not number:
        raise HTTPException(422, "Choose an account to call.")
    try:
        placed = await place(request, user, number, to, answer_within=VISIBLE_S)
    except Refused as refused:
        message = refused.body.get("reason", "not allowed")
        if refused.body.get("allowed_from"):
            message = f"{message} (allowed from {refused.body['allowed_from']})"
        return render(request, user, "error.html", status=refused.status, message=message)
    return see_other(f"/calls/{int(placed['call_id'])}")


@page(*READERS)
async def live_call(request: Request, user: Principal) -> Response:
    return await _call_page(request, user)


async def _call_page(
    request: Request,
    user: Principal,
    status: int = 200,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    notice: str | None = None,
) -> Response:
    call_id = int_id(request, "call_id")
    state, detail = await run_in_threadpool(_read, request, user, call_id)
    transcript = await transcript_now(request, call_id, state["status"])
    ctx = {
        "call": state,
        "detail": detail,
        "transcript": transcript,
        "can_pause": user.role in PAUSERS,
        "can_mark": user.role in CALLERS,
        "form": form or EMPTY,
        "errors": errors or {},
        "notice": notice,
    }
    return render(request, user, "call.html", status=status, **ctx)


def _read(request: Request, user: Principal, call_id: int) -> tuple[dict[str, Any], Any]:
    sessions, addr = sessions_of(request), client_addr(request)
    check_call_access(sessions, user, addr, call_id, "call.read", require_live=False)
    audit_transcript(request, user, call_id)
    with sessions() as session:
        return call_state(sessions, call_id), call_detail(session, call_id)


def audit_transcript(request: Request, user: Principal, call_id: int) -> None:
    """The page shows the transcript: audited as the API's transcript read is."""
    addr = client_addr(request)
    audit.record(sessions_of(request), user, addr, "transcript.read", "call", call_id)


@page(*PAUSERS)
async def pause(request: Request, user: Principal) -> Response:
    return await _pause(request, user, True)


@page(*PAUSERS)
async def resume(request: Request, user: Principal) -> Response:
    return await _pause(request, user, False)


async def _pause(request: Request, user: Principal, paused: bool) -> Response:
    try:
        await set_pause(request, user, paused)
    except HTTPException as exc:
        if exc.status_code == 404:
            raise
        return await _call_page(request, user, status=exc.status_code, notice=str(exc.detail))
    return see_other(f"/calls/{int_id(request, 'call_id')}")


@page(*CALLERS)
async def outcome(request: Request, user: Principal) -> Response:
    form = await read_form(request)
    result = await outcome_post(request, user, form)
    if result.errors:
        fields = {k: str(form.get(k, "")) for k in EMPTY}
        return await _call_page(request, user, status=422, form=fields, errors=result.errors)
    return see_other(f"/calls/{int_id(request, 'call_id')}?marked={result.kind}")


@page(*READERS)
async def events(request: Request, user: Principal) -> Response:
    call_id = int_id(request, "call_id")
    await run_in_threadpool(_read, request, user, call_id)  # 404 if not theirs; audited once
    headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
    stream = _stream(request, call_id)
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


async def _stream(request: Request, call_id: int) -> AsyncIterator[str]:
    sessions = sessions_of(request)
    sent: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    start = loop.time()
    ended_at: float | None = None
    yield "retry: 2000\n\n"
    while loop.time() - start < MAX_STREAM_S:
        state = await run_in_threadpool(call_state, sessions, call_id)
        transcript = await transcript_now(request, call_id, state["status"])
        for name, body in (("status", state), ("transcript", transcript)):
            text = json.dumps(body, separators=(",", ":"))
            if sent.get(name) != text:
                sent[name] = text
                yield f"event: {name}\ndata: {text}\n\n"
        if state["status"] != "in_progress":
            ended_at = ended_at if ended_at is not None else loop.time() - _ago(state["ended_at"])
            if loop.time() - ended_at >= SETTLE_S:
                yield "event: end\ndata: {}\n\n"
                return
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_S)


def _ago(iso: str | None) -> float:
    """Seconds since an instant the API gave (0 if unknown)."""
    if not iso:
        return 0.0
    return max(0.0, (utcnow() - dt.datetime.fromisoformat(iso)).total_seconds())


ROUTES: list[BaseRoute] = [
    Route("/calls", make_call, methods=["POST"]),
    Route("/calls/{call_id}", live_call, methods=["GET"]),
    Route("/calls/{call_id}/events", events, methods=["GET"]),
    Route("/calls/{call_id}/pause", pause, methods=["POST"]),
    Route("/calls/{call_id}/resume", resume, methods=["POST"]),
    Route("/calls/{call_id}/outcome", outcome, methods=["POST"]),
]
