"""The HTTP application composed from each package's routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from accounts.db import make_engine, make_sessions
from accounts.transcription import backlog_stats
from voice.api import api_mount
from voice.metrics import CONTENT_TYPE, scrape
from voice.pages import pages_routes


def build_app(supervisor: Any) -> Starlette:
    """`supervisor` needs `.cfg` and `async health()`; the schema must exist already."""

    async def healthz(request: Request) -> JSONResponse:
        health = await supervisor.health()
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    cfg = supervisor.cfg
    engine = make_engine(cfg.database_url, cfg.database.busy_timeout_ms)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            engine.dispose()

    metric_sessions = make_sessions(engine)

    async def metrics(request: Request) -> PlainTextResponse:
        health = await supervisor.health()
        text = await asyncio.to_thread(scrape, health, cfg, metric_sessions, backlog_stats)
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        api_mount(make_sessions(engine), cfg, fleet=supervisor),
        # Last: the pages' mount at the root answers every other path (404 as a page).
        *pages_routes(make_sessions(engine), cfg, fleet=supervisor),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
