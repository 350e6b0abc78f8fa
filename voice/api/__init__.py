"""The HTTP API under /api: bearer tokens, roles, the audit log and the notes store.

`api_mount(sessions)` is what `voice/app.py` mounts; `build_api(sessions)` is the API alone
(tests, tools), no supervisor needed. A package adds endpoints by appending its routes to
`ROUTES` (relative to /api), each endpoint declared with `@requires(...)` or `@public`, plus
one line in the role matrix (tests/unit/test_api_roles.py).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Mount

from voice.api import audit, calls, dialout, notes, openapi, outcomes, recording_keep, recordings
from voice.api.auth import database_busy, json_error
from voice.api.openapi import API_PREFIX
from voice.config import Config

ROUTES: list[BaseRoute] = [
    *notes.ROUTES,
    *audit.ROUTES,
    *recordings.ROUTES,
    *recording_keep.ROUTES,
    *calls.ROUTES,
    *dialout.ROUTES,
    *outcomes.ROUTES,
    *openapi.ROUTES,
]


def api_app(
    sessions: sessionmaker[Session], cfg: Config | None = None, fleet: Any = None
) -> Starlette:
    handlers = {HTTPException: json_error, OperationalError: database_busy}
    app = Starlette(routes=ROUTES, exception_handlers=handlers)
    app.state.sessions = sessions
    app.state.cfg = cfg  # None: built-in defaults (e.g. the recordings folder)
    app.state.fleet = fleet  # the supervisor (calls in progress); None: 503 for those
    return app


def api_mount(
    sessions: sessionmaker[Session], cfg: Config | None = None, fleet: Any = None
) -> Mount:
    return Mount(API_PREFIX, app=api_app(sessions, cfg, fleet))


def build_api(
    sessions: sessionmaker[Session], cfg: Config | None = None, fleet: Any = None
) -> Starlette:
    """The API alone, at /api, over an existing database (its schema already created)."""
    return Starlette(routes=[api_mount(sessions, cfg, fleet)])
