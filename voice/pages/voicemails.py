"""`/voicemails`: the voicemails left for the user's accounts, newest first, each playable,
with a Handled button that keeps who handled it and when (accounts/webtables.py
`VoicemailHandled`). The list is the API's own read (voice/api/notes.py `voicemail_list`,
audited as `voicemails.list`); which voicemails a user may mark is the same rule
(`voicemail_notes`). The header of every page counts the unhandled ones (voice/pages/web.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from accounts import audit
from accounts.models import Note
from accounts.users import Principal
from accounts.webtables import VoicemailHandled
from voice.api.auth import client_addr, deny, sessions_of
from voice.api.notes import voicemail_list, voicemail_notes
from voice.api.params import int_id
from voice.pages.web import VOICEMAIL_READERS, page, render, see_other

PAGE = 50


@page(*VOICEMAIL_READERS)
async def voicemails(request: Request, user: Principal) -> Response:
    before = request.query_params.get("before")
    before_id = int(before) if before and before.isdigit() and len(before) < 19 else None
    args = (sessions_of(request), user, client_addr(request), PAGE, before_id)
    notes = await run_in_threadpool(voicemail_list, *args)
    handled = await run_in_threadpool(_handled, request, [n["id"] for n in notes])
    ctx = {
        "voicemails": notes,
        "handled": handled,
        "next_before": notes[-1]["id"] if len(notes) == PAGE else None,
    }
    return render(request, user, "voicemails.html", **ctx)


def _handled(request: Request, ids: list[int]) -> dict[int, Any]:
    with sessions_of(request)() as session:
        rows = session.scalars(select(VoicemailHandled).where(VoicemailHandled.note_id.in_(ids)))
        return {row.note_id: row for row in rows}


@page(*VOICEMAIL_READERS)
async def mark_handled(request: Request, user: Principal) -> Response:
    note_id = int_id(request, "note_id")
    if not await run_in_threadpool(_mark, request, user, note_id):
        raise HTTPException(404, f"no voicemail {note_id}")
    return see_other(f"/voicemails#voicemail-{note_id}")


def _mark(request: Request, user: Principal, note_id: int) -> bool:
    """Mark a voicemail the user may see as handled (once: the first marking is kept)."""
    addr = client_addr(request)
    with sessions_of(request).begin() as session:
        found = session.execute(voicemail_notes(user).where(Note.id == note_id)).first()
        if found is None:
            deny(session, user, addr, "note", note_id, "no such voicemail for this user")
            return False
        if session.get(VoicemailHandled, note_id) is None:
            session.add(VoicemailHandled(note_id=note_id, user_name=user.name))
            detail = {"account": found[1]}
            audit.record(session, user, addr, "voicemail.handled", "note", note_id, detail)
    return True


ROUTES: list[BaseRoute] = [
    Route("/voicemails", voicemails, methods=["GET"]),
    Route("/voicemails/{note_id}/handled", mark_handled, methods=["POST"]),
]
