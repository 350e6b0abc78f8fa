"""Server-rendered pages for people (Starlette + Jinja2, plain forms, small progressive JS).

`pages_routes(sessions, cfg, fleet)` is what voice/app.py mounts next to the API. Each page
module has `ROUTES` and its handlers use voice/pages/web.py `page` and `render`; a new page
module adds its import line in `pages_routes`. Access rules and queries are the API's own.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from voice.api.auth import BUSY
from voice.config import Config
from voice.pages.web import HERE, render

log = logging.getLogger(__name__)


def pages_routes(
    sessions: sessionmaker[Session], cfg: Config | None = None, fleet: Any = None
) -> list[BaseRoute]:
    """The pages as one mount at the site's root (after /api, /healthz and /metrics)."""
    # One line per page module; each has ROUTES.
    from voice.pages import account, audio, calls, compliance, login, today, voicemails

    routes: list[BaseRoute] = [
        *login.ROUTES,
        *audio.ROUTES,
        *compliance.ROUTES,
        *today.ROUTES,
        *calls.ROUTES,
        *account.ROUTES,
        *voicemails.ROUTES,
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    handlers = {HTTPException: _error_page, OperationalError: _database_busy}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.sessions = sessions
    app.state.cfg = cfg
    app.state.fleet = fleet
    return [Mount("", app=app)]


async def _database_busy(request: Request, exc: Exception) -> Response:
    """A busy database (its transaction rolled back) as a 503 page that says to try again."""
    log.warning("%s %s: database refused: %s", request.method, request.url.path, exc)
    return await _error_page(request, HTTPException(503, BUSY, headers={"Retry-After": "2"}))


async def _error_page(request: Request, exc: Exception) -> Response:
    """An error raised by a page (or an unknown path) as a page, never a traceback."""
    assert isinstance(exc, HTTPException)
    user = getattr(request.state, "user", None)
    message = (
        str(exc.detail)
        if exc.status_code != 404
        else ("This page does not exist, or is not yours to see.")
    )
    response = render(request, user, "error.html", status=exc.status_code, message=message)
    if exc.headers:
        response.headers.update(exc.headers)
    return response
