"""The role matrix: every /api endpoint against every kind of caller, and the audit row each
request leaves.

To add an endpoint, add one `Endpoint(...)` line to ENDPOINTS, using the route's own path
(with the /api prefix) and its path parameter names; if a parameter is new, give it an own
and an other value in tests/unit/apiworld.py `make_world`. `test_every_route_is_in_the_matrix`
fails until the line is there, and `test_matrix_roles_match_the_code` until its roles agree
with the endpoint's `@requires`.

Expected status of each cell:
  anonymous, bad_token, disabled                   401 (no audit row: there is no user)
  a role not in `roles`                            403 + audit access.denied
  collector on another collector's thing (scoped)  404 + audit access.denied
  otherwise                                        `ok` + audit `audit` (if not None)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from starlette.routing import Route

from accounts.models import USER_ROLES, Collector, Softphone
from tests.unit.apiworld import CLIENT, World, make_world
from voice.api import ROUTES
from voice.api.auth import DENIED, roles_of
from voice.api.openapi import API_PREFIX

ANY_ROLE = USER_ROLES
KEEPERS = ("compliance", "admin")  # recordings: integrity checks and legal holds
HOLD = {"reason": "Litigation hold, matter 2026-17"}
CALLERS = (
    "anonymous",  # no Authorization header
    "bad_token",  # a well-formed token nobody holds
    "disabled",  # the token a disabled admin held
    "collector_own",  # collector user on their own account's things
    "collector_other",  # the same collector on another collector's things
    "supervisor",
    "compliance",
    "admin",
)


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # the route's path with /api; {params} filled from World.targets
    roles: tuple[str, ...]  # who may call it: must equal the endpoint's @requires
    audit: str | None  # audit action of an allowed call (None: not audited)
    ok: int = 200
    scoped: bool = False  # collectors reach only their own accounts' things (else 404)
    json: dict[str, Any] | None = None
    public: bool = False  # @public: anyone, token or not, no audit

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


PAUSERS = ("collector", "supervisor", "admin")  # the people on a call, and its managers
ENDPOINTS = [
    Endpoint("GET", "/api/calls/{call_id}/transcript", ANY_ROLE, "transcript.read", scoped=True),
    Endpoint(
        "POST", "/api/calls/{call_id}/recording/pause", PAUSERS, "recording.pause", scoped=True
    ),
    Endpoint(
        "POST", "/api/calls/{call_id}/recording/resume", PAUSERS, "recording.resume", scoped=True
    ),
    Endpoint("GET", "/api/accounts/{number}/notes", ANY_ROLE, "notes.list", scoped=True),
    Endpoint("GET", "/api/notes/{note_id}", ANY_ROLE, "note.read", scoped=True),
    Endpoint("GET", "/api/voicemails", ANY_ROLE, "voicemails.list"),
    Endpoint(
        "POST",
        "/api/accounts/{number}/notes",
        ("collector", "supervisor", "admin"),
        "note.create",
        ok=201,
        scoped=True,
        json={"body": "Promised to pay on Friday."},
    ),
    Endpoint("GET", "/api/audit", ("compliance", "admin"), "audit.read"),
    Endpoint("GET", "/api/recordings", ANY_ROLE, "recordings.search"),
    Endpoint("GET", "/api/recordings/{recording_id}", ANY_ROLE, "recording.read", scoped=True),
    Endpoint(
        "GET", "/api/recordings/{recording_id}/audio", ANY_ROLE, "recording.play", scoped=True
    ),
    Endpoint(
        "GET", "/api/recordings/{recording_id}/peaks", ANY_ROLE, "recording.peaks", scoped=True
    ),
    Endpoint("POST", "/api/recordings/{recording_id}/verify", KEEPERS, "recording.verify"),
    Endpoint("PUT", "/api/recordings/{recording_id}/hold", KEEPERS, "recording.hold", json=HOLD),
    Endpoint("DELETE", "/api/recordings/{recording_id}/hold", KEEPERS, "recording.release"),
    Endpoint(
        "POST",
        "/api/calls/{call_id}/outcome",
        ("collector", "supervisor", "admin"),
        "call.outcome",
        ok=201,
        scoped=True,
        json={"kind": "reached"},
    ),
    Endpoint("GET", "/api/followups", ("collector", "supervisor", "admin"), "followups.list"),
    Endpoint(
        "GET",
        "/api/accounts/{number}/callable",
        ("collector", "supervisor", "admin"),
        "account.callable",
        scoped=True,
    ),
    Endpoint("POST", "/api/calls", ("collector",), "call.place", ok=202, json={"account": "10042"}),
    Endpoint("GET", "/api/calls/{call_id}", ANY_ROLE, "call.read", scoped=True),
    Endpoint("GET", "/api/openapi.json", (), None, public=True),
]
# Placing a call passes the guardrails' calling hours: a Wednesday, 10:00 in New York.
DAYTIME = dt.datetime(2026, 11, 4, 15, 0, tzinfo=dt.UTC)


def expected_status(ep: Endpoint, caller: str) -> int:
    if ep.public:
        return ep.ok
    if caller in ("anonymous", "bad_token", "disabled"):
        return 401
    role = "collector" if caller.startswith("collector") else caller
    if role not in ep.roles:
        return 403
    if caller == "collector_other" and ep.scoped:
        return 404
    return ep.ok


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # SQLite only: the storage rules themselves run on both backends in test_api_notes.py.
    path: Path = tmp_path_factory.mktemp("roles") / "voice.db"
    w = make_world(f"sqlite:///{path}", path.parent / "recordings")
    w.api_state.clock = lambda: DAYTIME
    with w.sessions.begin() as session:  # a phone to ring first (the demo's is example.com)
        session.add(Softphone(username="dana", realm="r", ha1="0" * 32, ha1b="0" * 32,
                              collector_id=session.scalar(select(Collector.id).where(
                                  Collector.name == "Dana Whitfield"))))  # fmt: skip
    yield w
    w.engine.dispose()


def _routes() -> dict[str, Any]:
    found = {}
    for route in ROUTES:
        assert isinstance(route, Route), f"{route!r}: only plain routes under /api"
        for method in sorted((route.methods or set()) - {"HEAD"}):
            found[f"{method} {API_PREFIX}{route.path}"] = route.endpoint
    return found


def test_every_route_is_in_the_matrix() -> None:
    assert sorted(_routes()) == sorted(str(ep) for ep in ENDPOINTS)


@pytest.mark.parametrize("ep", ENDPOINTS, ids=str)
def test_matrix_roles_match_the_code(ep: Endpoint) -> None:
    endpoint = _routes()[str(ep)]
    assert roles_of(endpoint) is not None, f"{ep}: declare @requires(...) or @public"
    assert getattr(endpoint, "public", False) == ep.public
    assert roles_of(endpoint) == frozenset(ep.roles)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("ep", ENDPOINTS, ids=str)
def test_role_matrix(world: World, ep: Endpoint, caller: str) -> None:
    side = "other" if caller == "collector_other" else "own"
    path = ep.path.format(**world.targets[side])
    who = "collector" if caller.startswith("collector") else caller
    before = world.last_audit_id()

    response = world.request(ep.method, path, who, json=ep.json)

    want = expected_status(ep, caller)
    assert response.status_code == want, response.text
    rows = world.audit_since(before)
    if want == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"] == "unauthorized"
    if want == 403:
        assert "reason" in response.json() and who in response.json()["reason"]
    if want == 401 or ep.public:
        assert rows == []
        return
    assert len(rows) == 1, [(r.action, r.detail) for r in rows]
    row = rows[0]
    assert (row.user_name, row.role, row.client_addr) == (
        world.names[who],
        "collector" if who == "collector" else who,
        CLIENT,
    )
    assert row.at.tzinfo is not None
    if want in (403, 404):
        assert (row.action, row.detail["status"]) == (DENIED, want)
    else:
        assert row.action == ep.audit
