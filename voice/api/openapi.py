"""The OpenAPI 3.1 document, built from the routes themselves.

Each operation takes its summary and description from the handler's docstring, its security
and the roles it allows from `@requires`, its path parameters from the route, and anything
else (query parameters, request body, responses) from `@documented(...)`. A route that is
added to the API is in the document without further work.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from voice.api.auth import public, roles_of

API_PREFIX = "/api"
_PATH_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")
_ERRORS = {
    "401": "missing, unknown or revoked token",
    "403": "the user's role may not do this",
    "404": "no such thing, or not visible to this user",
    "422": "invalid parameters",
}


def documented(**operation: Any) -> Callable[[Any], Any]:
    """Extra OpenAPI for one operation: `parameters`, `requestBody`, `responses`, ...
    Put it under `@requires(...)`, directly on the handler."""

    def decorate(handler: Any) -> Any:
        handler.openapi = operation
        return handler

    return decorate


def query_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema}


def id_param(name: str) -> dict[str, Any]:
    """An integer path parameter: the id of a call, a recording, a note."""
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body of `schema`."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def error_responses(*codes: str) -> dict[str, Any]:
    return {code: {"description": _ERRORS[code], "content": _ERROR_CONTENT} for code in codes}


_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def build_spec(routes: Iterable[BaseRoute], prefix: str = API_PREFIX) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        path = prefix + _PATH_PARAM.sub(r"{\1}", route.path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            paths.setdefault(path, {})[method.lower()] = _operation(route, path)
    return {
        "openapi": "3.1.0",
        "info": {"title": "collections-voice API", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}, "reason": {"type": "string"}},
                }
            },
        },
        "security": [{"bearer": []}],
    }


def _operation(route: Route, path: str) -> dict[str, Any]:
    endpoint = route.endpoint
    handler = inspect.unwrap(endpoint)
    summary, _, description = (inspect.getdoc(handler) or "").partition("\n")
    extra: dict[str, Any] = dict(getattr(handler, "openapi", {}))
    roles = roles_of(endpoint)
    op: dict[str, Any] = {"operationId": handler.__name__, "summary": summary.strip()}
    if getattr(endpoint, "public", False):
        op["security"] = []
    elif roles:
        description = f"{description.strip()}\n\nRoles: {', '.join(sorted(roles))}.".strip()
        op["x-roles"] = sorted(roles)
    if description.strip():
        op["description"] = description.strip()
    declared = {p["name"] for p in extra.get("parameters", [])}
    path_params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(path)
        if name not in declared
    ]
    op["parameters"] = path_params + list(extra.pop("parameters", []))
    responses = extra.pop("responses", {"200": {"description": "OK"}})
    if not getattr(endpoint, "public", False):
        responses = {**responses, **error_responses("401", "403")}
    op["responses"] = responses
    op.update(extra)
    return op


@public
async def openapi(request: Request) -> Response:
    """This document."""
    return JSONResponse(build_spec(request.app.routes))


ROUTES = [Route("/openapi.json", openapi, methods=["GET"])]
