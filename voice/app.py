"""The HTTP application composed from each package's routes."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def build_app(supervisor: Any) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        health = await supervisor.health()
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    return Starlette(routes=[Route("/healthz", healthz)])
