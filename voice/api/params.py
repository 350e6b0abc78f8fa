"""Strict parsing of what a request carries: path parameters, query strings, JSON bodies.

Path parameters are checked against a fixed alphabet before anything else sees them, and only
ever reach SQL as bound parameters. Starlette's `{name}` never matches a "/" (also not an
encoded %2F, which the server decodes first), so `..` is the one traversal-looking value left
and the alphabets below refuse it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

from accounts.models import ACCOUNT_NUMBER

_ID = re.compile(r"[0-9]{1,18}")  # fits a 64-bit integer column on every backend
MAX_JSON_BYTES = 64 * 1024


def account_number(request: Request, name: str = "number") -> str:
    value = request.path_params[name]
    if not ACCOUNT_NUMBER.fullmatch(value):
        raise HTTPException(404, "not an account number")
    return value


def int_id(request: Request, name: str) -> int:
    value = request.path_params[name]
    if not _ID.fullmatch(value) or int(value) == 0:
        raise HTTPException(404, f"{name} must be a positive integer")
    return int(value)


def query(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each at most once; an unknown one is refused, not ignored, so a
    typo (`?usr=`) never silently widens a search."""
    items = request.query_params.multi_items()
    names = [name for name, _ in items]
    unknown = sorted({n for n in names if n not in allowed})
    if unknown:
        raise HTTPException(422, f"unknown query parameter(s) {unknown}; known: {list(allowed)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise HTTPException(422, f"query parameter(s) {repeated} given more than once")
    return dict(items)


def int_query(
    params: dict[str, str], name: str, default: int | None, lo: int, hi: int
) -> int | None:
    raw = params.get(name)
    if raw is None:
        return default
    if not _ID.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise HTTPException(422, f"{name} must be an integer from {lo} to {hi}")
    return int(raw)


_SPACED_OFFSET = re.compile(r"(.*\d) (\d\d:?\d\d)")


def utc_query(params: dict[str, str], name: str) -> dt.datetime | None:
    """An ISO 8601 instant with its offset (or Z), or a date (midnight UTC)."""
    raw = params.get(name)
    if raw is None:
        return None
    # An unencoded "+01:00" arrives as " 01:00" (a query string's "+" is a space).
    raw = _SPACED_OFFSET.sub(r"\1+\2", raw.strip())
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            return dt.datetime.combine(dt.date.fromisoformat(raw), dt.time(), dt.UTC)
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise HTTPException(422, f"{name} must be ISO 8601 with an offset, e.g. 2026-11-01T00:00Z")
    return value.astimezone(dt.UTC)


def utc_until(params: dict[str, str], name: str) -> dt.datetime | None:
    """An exclusive upper bound: as utc_query, but a date means through the end of that day."""
    end = utc_query(params, name)
    if end is not None and re.fullmatch(r"\d{4}-\d{2}-\d{2}", params[name].strip()):
        end += dt.timedelta(days=1)
    return end


async def read_json(request: Request, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The body as a JSON object; 415 if it is not JSON, 413 if too large, 400 if malformed."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise HTTPException(415, "send Content-Type: application/json")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > max_bytes:
            raise HTTPException(413, f"body larger than {max_bytes} bytes")
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise HTTPException(400, "body is not valid JSON") from None
    if not isinstance(value, dict):
        raise HTTPException(422, "body must be a JSON object")
    return value
