"""Recordings played in a page: the API's own Range endpoint behind the page session.

`<audio src="/recordings/{id}/audio">` in a page runs voice/api/recording_audio.py
`audio_response`, the API's GET /api/recordings/{id}/audio: the same access rule, the same
`recording.play` audit row, the same Range handling, with the user of the page session
instead of a bearer token.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from accounts.users import Principal
from voice.api.recording_access import READERS
from voice.api.recording_audio import audio_response
from voice.pages.web import page


@page(*READERS)
async def recording_audio(request: Request, user: Principal) -> Response:
    return await audio_response(request, user)


ROUTES: list[BaseRoute] = [
    Route("/recordings/{recording_id}/audio", recording_audio, methods=["GET", "HEAD"]),
]
