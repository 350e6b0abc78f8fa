"""Pages for compliance staff: find a recording, play it with its transcript, verify, hold, audit.

Every access goes through the recordings and audit API's own functions (voice/api/:
recording_access.py, recordings.py, recording_keep.py, audit.py): the same access rule
(`visible`: collectors only their accounts' recordings, others 404), the same audit row written
before anything is sent, the same query.
The player's audio is the API's Range endpoint behind the page session (voice/pages/audio.py).
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from accounts import audit
from accounts.users import Principal
from recordings.search import RecordingSearch, SearchError, utterances
from voice.api import dialout
from voice.api.audit import AUDIT_PARAMS, filters_from
from voice.api.audit import read_for as read_audit
from voice.api.auth import client_addr, config_of, sessions_of
from voice.api.recording_access import READERS, file_access
from voice.api.recording_keep import KEEPERS, check_reason, hold_for, verify_for
from voice.api.recordings import (
    SEARCH_PARAMS,
    export_for,
    filter_from,
    peaks_for,
    read_for,
    search_for,
)
from voice.pages.web import SECURITY_HEADERS, not_found, page, render

AUDITORS = ("compliance", "admin")
PAGE = 50
AUDIT_PAGE = 100
SEARCH_FIELDS = (
    ("account", "Account"),
    ("phone", "Phone"),
    ("collector", "Collector"),
    ("from", "From"),
    ("to", "To"),
    ("direction", "Direction"),
    ("q", "Words said"),
)
AUDIT_FIELDS = (
    ("user", "User"),
    ("action", "Action"),
    ("target", "Target"),
    ("since", "From"),
    ("until", "To"),
)
# A spreadsheet runs a cell starting with = + - @ (or a tab/CR before one) as a formula; a
# plain signed number ("+12125550101", "-4.5") is left as it is.
_NUMBER = re.compile(r"[+-][0-9. ]*")


def _params(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The form's non-empty values among `allowed` (an empty field is no filter)."""
    return {k: v.strip() for k, v in request.query_params.items() if k in allowed and v.strip()}


def _message(name: str, text: str) -> str:
    """A search error without its field's name ("phone: invalid ..."): shown beside the field."""
    prefix = f"{name}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _search_errors(request: Request, params: dict[str, str]) -> dict[str, str]:
    """Each bad filter value by its field, as the API would refuse it (one field at a time)."""
    search = RecordingSearch(sessions_of(request), config_of(request).accounts.default_region)
    errors = {}
    for name, value in params.items():
        try:
            search.check(filter_from({name: value}))
        except HTTPException as exc:
            errors[name] = str(exc.detail)
        except SearchError as exc:
            errors[name] = _message(name, str(exc))
    return errors


@page(*READERS)
async def recordings(request: Request, user: Principal) -> Response:
    params = _params(request, (*SEARCH_PARAMS, "offset"))
    errors = await run_in_threadpool(_search_errors, request, params)
    rows: list[dict[str, Any]] = []
    if not errors:
        flt = filter_from({**params, "limit": str(PAGE)})
        args = (sessions_of(request), config_of(request), user, client_addr(request), flt, params)
        rows = await run_in_threadpool(search_for, *args)
    offset = int(params.get("offset", "0")) if "offset" not in errors else 0
    return render(
        request,
        user,
        "recordings.html",
        status=422 if errors else 200,
        fields=SEARCH_FIELDS,
        values=params,
        errors=errors,
        rows=rows,
        offset=offset,
        page_size=PAGE,
        link=lambda **change: _link("/recordings", params, change),
    )


def _link(path: str, params: dict[str, str], change: dict[str, Any]) -> str:
    """`path` with the current filters, some changed (None: removed)."""
    merged = {**params, **{k: str(v) for k, v in change.items() if v is not None}}
    for key in [k for k, v in change.items() if v is None]:
        merged.pop(key, None)
    return path + ("?" + urlencode(merged) if merged else "")


@page(*READERS)
async def recordings_csv(request: Request, user: Principal) -> Response:
    params = _params(request, SEARCH_PARAMS)
    flt = filter_from(params)  # a bad value: the error page, nothing exported
    args = (sessions_of(request), config_of(request), user, client_addr(request), flt, params)
    found = await run_in_threadpool(export_for, *args)
    header = ["id", "started_at", "account", "customer", "direction", "caller", "callee"]
    header += ["collector", "duration_s", "status", "loss", "pci_pauses", "legal_hold", "sha256"]
    lines = [
        [
            r.id,
            r.started_at.isoformat(),
            r.account_number,
            r.customer,
            r.direction,
            r.caller,
            r.callee,
            r.collector,
            r.duration_s,
            r.status,
            r.loss,
            len(r.pauses),
            r.legal_hold,
            r.sha256,
        ]
        for r in found
    ]
    return _csv("recordings.csv", header, lines)


def _csv(name: str, header: list[str], lines: list[list[Any]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for line in lines:
        writer.writerow(["" if v is None else _cell(str(v)) for v in line])
    headers = {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


def _cell(value: str) -> str:
    risky = value[:1] in ("=", "@", "\t", "\r") or (
        value[:1] in ("+", "-") and not _NUMBER.fullmatch(value)
    )
    return "'" + value if risky else value


# -- one recording ------------------------------------------------------------------------


def _rid(request: Request) -> int | None:
    raw = request.path_params["recording_id"]
    return int(raw) if raw.isdigit() and 0 < len(raw) <= 18 else None


def _view(request: Request, user: Principal, rid: int) -> dict[str, Any] | None:
    sessions, addr = sessions_of(request), client_addr(request)
    try:
        info = read_for(sessions, user, addr, rid)
    except HTTPException as exc:
        if exc.status_code == 404:
            return None
        raise
    # The call's timeline, with the calls API's own access check and audit row.
    call = dialout._status(sessions, user, addr, info.call_id)
    transcript = utterances(sessions, info.call_id, rid)
    verified = audit.latest(sessions, "recording.verify", "recording", rid)
    return {"rec": info, "call": call, "transcript": transcript, "verified": verified}


async def _show(
    request: Request, user: Principal, rid: int | None, status: int = 200, **extra: Any
) -> Response:
    view = await run_in_threadpool(_view, request, user, rid) if rid is not None else None
    if view is None:
        return not_found(request, user, "This recording")
    keeper = user.role in KEEPERS
    ctx = {"keeper": keeper, "reason_error": None, "reason": "", **view, **extra}
    return render(request, user, "recording.html", status=status, **ctx)


@page(*READERS)
async def recording(request: Request, user: Principal) -> Response:
    return await _show(request, user, _rid(request))


@page(*READERS)
async def recording_peaks(request: Request, user: Principal) -> Response:
    rid = _rid(request)
    if rid is None:
        raise HTTPException(404)
    peaks = await run_in_threadpool(peaks_for, *file_access(request, user), rid)
    return JSONResponse(peaks, headers=SECURITY_HEADERS)


@page(*KEEPERS)
async def verify(request: Request, user: Principal) -> Response:
    rid = _rid(request)
    if rid is None:
        return not_found(request, user, "This recording")
    try:
        await run_in_threadpool(verify_for, *file_access(request, user), rid)
    except HTTPException as exc:
        if exc.status_code == 404:
            return not_found(request, user, "This recording")
        raise
    return RedirectResponse(f"/recordings/{rid}#integrity", status_code=303)


@page(*KEEPERS)
async def hold(request: Request, user: Principal) -> Response:
    rid = _rid(request)
    if rid is None:
        return not_found(request, user, "This recording")
    form = await request.form()
    held = form.get("action") != "release"
    raw = form.get("reason")
    reason = raw.strip() if isinstance(raw, str) else ""
    try:
        check_reason({"reason": reason})
        args = (sessions_of(request), config_of(request), user, client_addr(request), rid)
        await run_in_threadpool(hold_for, *args, held, reason)
    except HTTPException as exc:
        if exc.status_code == 404:
            return not_found(request, user, "This recording")
        return await _show(
            request, user, rid, status=exc.status_code, reason_error=exc.detail, reason=reason
        )
    return RedirectResponse(f"/recordings/{rid}#hold", status_code=303)


# -- the audit log ------------------------------------------------------------------------


def _audit_errors(params: dict[str, str]) -> dict[str, str]:
    errors = {}
    for name, value in params.items():
        try:
            filters_from({name: value})
        except HTTPException as exc:
            errors[name] = str(exc.detail)
    return errors


@page(*AUDITORS)
async def audit_log(request: Request, user: Principal) -> Response:
    params = _params(request, AUDIT_PARAMS)
    params.pop("limit", None)
    errors = _audit_errors(params)
    entries: list[dict[str, Any]] = []
    if not errors:
        filters = filters_from({**params, "limit": str(AUDIT_PAGE)})
        args = (sessions_of(request), user, client_addr(request), filters)
        entries = await run_in_threadpool(read_audit, *args)
    next_after = entries[-1]["id"] if len(entries) == AUDIT_PAGE else None
    return render(
        request,
        user,
        "audit.html",
        status=422 if errors else 200,
        fields=AUDIT_FIELDS,
        values=params,
        errors=errors,
        entries=entries,
        next_link=_link("/audit", params, {"after": next_after}) if next_after else None,
        first_link=_link("/audit", params, {"after": None}) if "after" in params else None,
        csv_link=_link("/audit.csv", params, {"after": None}),
    )


@page(*AUDITORS)
async def audit_csv(request: Request, user: Principal) -> Response:
    params = _params(request, AUDIT_PARAMS)
    filters = filters_from({**params, "limit": str(audit.MAX_LIMIT)})
    args = (sessions_of(request), user, client_addr(request), filters)
    entries = await run_in_threadpool(read_audit, *args)
    header = ["id", "at", "user", "role", "client_addr", "action", "target_type", "target_id"]
    lines = [[e[k] for k in header] + [_detail(e["detail"])] for e in entries]
    return _csv("audit.csv", [*header, "detail"], lines)


def _detail(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, separators=(",", ":"))


ROUTES: list[BaseRoute] = [
    Route("/recordings", recordings, methods=["GET"]),
    Route("/recordings.csv", recordings_csv, methods=["GET"]),
    Route("/recordings/{recording_id}", recording, methods=["GET"]),
    Route("/recordings/{recording_id}/peaks", recording_peaks, methods=["GET"]),
    Route("/recordings/{recording_id}/verify", verify, methods=["POST"]),
    Route("/recordings/{recording_id}/hold", hold, methods=["POST"]),
    Route("/audit", audit_log, methods=["GET"]),
    Route("/audit.csv", audit_csv, methods=["GET"]),
]
