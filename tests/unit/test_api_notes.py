"""The notes API on SQLite and PostgreSQL: what each user sees and writes, validation, paging,
path tricks that must end as 404/405 without their text reaching SQL, and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from accounts.models import Note
from tests.unit.apiworld import World, add_note, make_world, request
from voice.api import ROUTES
from voice.api.auth import DENIED
from voice.api.openapi import API_PREFIX
from voice.app import build_app
from voice.config import from_mapping


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    w = make_world(database_url)
    yield w
    w.engine.dispose()


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world for tests refused before any storage rule applies (backend-independent)."""
    w = make_world(f"sqlite:///{tmp_path_factory.mktemp('api') / 'voice.db'}")
    yield w
    w.engine.dispose()


@pytest.fixture
def sql(sqlite_world: World) -> Iterator[list[str]]:
    """The text of every SQL statement run while the test runs (parameters not included)."""
    statements: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(sqlite_world.engine, "before_cursor_execute", capture)
    yield statements
    event.remove(sqlite_world.engine, "before_cursor_execute", capture)


def test_collector_reads_and_writes_own_account_notes(world: World) -> None:
    body = "Called back: will pay 500.00 on Friday.\nAsked for invoice copy ✓"
    created = world.request("POST", "/api/accounts/10042/notes", "collector", json={"body": body})
    assert created.status_code == 201, created.text
    note = created.json()
    assert (note["author"], note["kind"], note["body"], note["account"]) == (
        "dana",
        "manual",
        body,
        "10042",
    )
    assert created.headers["location"] == f"/api/notes/{note['id']}"

    listed = world.request("GET", "/api/accounts/10042/notes", "collector").json()
    assert [n["body"] for n in listed["notes"]] == [body, "own note"]  # newest first
    assert listed["next_before"] is None
    assert world.request("GET", f"/api/notes/{note['id']}", "collector").json() == note

    rows = world.audit_since(0)
    create = next(r for r in rows if r.action == "note.create")
    assert (create.target_type, create.target_id) == ("note", str(note["id"]))
    assert create.detail == {"account": "10042", "chars": len(body)}


def test_unassigned_and_unknown_accounts(world: World) -> None:
    assert world.request("GET", "/api/accounts/30003/notes", "collector").status_code == 404
    assert world.request("GET", "/api/accounts/30003/notes", "supervisor").status_code == 200
    unknown = world.request("GET", "/api/accounts/99999/notes", "admin")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "not found", "reason": "no account 99999"}
    reasons = [(r.target_id, r.detail["reason"]) for r in world.audit_since(0)
               if r.action == DENIED]  # fmt: skip
    assert reasons == [
        ("30003", "account not assigned to this collector"),
        ("99999", "no such account"),
    ]


def test_an_other_collectors_account_looks_like_a_missing_one(world: World) -> None:
    other = world.request("GET", "/api/accounts/20001/notes", "collector")
    missing = world.request("GET", "/api/accounts/29999/notes", "collector")
    assert other.status_code == missing.status_code == 404
    assert other.json()["reason"].replace("20001", "N") == missing.json()["reason"].replace(
        "29999", "N"
    )


def test_paging(world: World) -> None:
    ids = [add_note(world.sessions, "20001", f"note {i}") for i in range(5)]
    page = world.request("GET", "/api/accounts/20001/notes?limit=2", "supervisor").json()
    assert [n["id"] for n in page["notes"]] == ids[:-3:-1]
    assert page["next_before"] == ids[-2]
    rest = world.request(
        "GET", f"/api/accounts/20001/notes?limit=10&before={page['next_before']}", "supervisor"
    ).json()
    assert [n["body"] for n in rest["notes"]] == ["note 2", "note 1", "note 0", "other note"]
    assert rest["next_before"] is None


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": {"body": ""}}, 422),
        ({"json": {"body": "   \n "}}, 422),
        ({"json": {"body": "x" * 10_001}}, 422),
        ({"json": {"body": "nul\x00byte"}}, 422),
        ({"json": {"body": "bell\x07"}}, 422),
        ({"json": {"body": 42}}, 422),
        ({"json": {"body": "ok", "author": "someone else"}}, 422),
        ({"json": {"text": "ok"}}, 422),
        ({"json": ["body"]}, 422),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400),
        ({"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 400),
        ({"content": b"[" * 60_000, "headers": {"content-type": "application/json"}}, 400),
        ({"content": b"body=x", "headers": {"content-type": "text/plain"}}, 415),
        ({"json": {"body": "x" * 70_000}}, 413),
    ],
)
def test_note_body_is_validated(sqlite_world: World, kwargs: dict[str, Any], status: int) -> None:
    kwargs = dict(kwargs)  # the parametrized dict is shared: leave it whole
    token = sqlite_world.tokens["admin"]
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    path = "/api/accounts/10042/notes"
    response = request(sqlite_world.app, "POST", path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]
    with sqlite_world.sessions() as session:
        assert session.scalars(select(Note.body).where(Note.kind == "manual")).all() == []


def test_longest_note_is_accepted(world: World) -> None:
    body = "é" * 10_000
    response = world.request("POST", "/api/accounts/10042/notes", "supervisor", json={"body": body})
    assert response.status_code == 201
    assert response.json()["body"] == body


@pytest.mark.parametrize(
    "path",
    [
        "/api/accounts/..%2F..%2Fetc%2Fpasswd/notes",
        "/api/accounts/%2e%2e/notes",
        "/api/accounts/%2E%2E%2F20001/notes",
        "/api/accounts/..%5C20001/notes",
        "/api/accounts/10042%00/notes",
        "/api/accounts/10042%0a/notes",
        "/api/accounts/' OR '1'='1/notes",
        "/api/accounts/10042;DROP TABLE notes/notes",
        "/api/accounts/%E2%80%AE24001/notes",
        "/api/accounts/%EF%BC%91%EF%BC%90%EF%BC%90%EF%BC%94%EF%BC%92/notes",  # fullwidth digits
        "/api/accounts/10042%20/notes",
        "/api/accounts/-10042/notes",
        "/api/accounts/" + "9" * 65 + "/notes",
        "/api/accounts//notes",
        "/api/notes/1%20OR%201=1",
        "/api/notes/-1",
        "/api/notes/0",
        "/api/notes/1.0",
        "/api/notes/0x1",
        "/api/notes/%31",
        "/api/notes/" + "9" * 19,
        "/api/notes/99999999999999999999999999",
        "/api/notes/..%2Faudit",
        "/api/notes/%2e%2e",
    ],
)
def test_path_tricks_are_refused_without_reaching_sql(
    sqlite_world: World, sql: list[str], path: str
) -> None:
    response = sqlite_world.request("GET", path, "admin")
    # "%31" is "1" once decoded: a real note, served. Everything else is not found.
    if path.endswith("%31"):
        assert response.status_code == 200
        return
    assert response.status_code in (404, 405), response.text
    # Refused before any query: the only SQL was the token's look-up (or none at all).
    assert all("users.token_hash = " in s for s in sql), sql


def test_account_number_alphabet_reaches_sql_only_as_a_parameter(
    sqlite_world: World, sql: list[str]
) -> None:
    response = sqlite_world.request("GET", "/api/accounts/10042 OR 1/notes", "admin")
    assert response.status_code == 404
    assert sql and not [s for s in sql if "10042" in s]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "limit=abc", "before=-1", "limt=5", "limit=1&limit=2"]
)
def test_bad_query_parameters_are_refused(sqlite_world: World, query: str) -> None:
    response = sqlite_world.request("GET", f"/api/accounts/10042/notes?{query}", "admin")
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_notes_cannot_be_changed_or_deleted(sqlite_world: World, method: str) -> None:
    note_id = sqlite_world.targets["own"]["note_id"]
    assert sqlite_world.request(method, f"/api/notes/{note_id}", "admin").status_code == 405


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("Basic YWRhOnB3", "missing bearer token"),
        ("Bearer", "missing bearer token"),
        ("Bearer cv_" + "x" * 300, "invalid or revoked token"),
        ("Bearer not-one-of-ours", "invalid or revoked token"),
        ("Bearer cv_ünïcode", "invalid or revoked token"),
    ],
)
def test_malformed_authorization(sqlite_world: World, header: str, reason: str) -> None:
    response = request(
        sqlite_world.app,
        "GET",
        "/api/accounts/10042/notes",
        headers={"Authorization": header.encode()},
    )
    assert response.status_code == 401
    assert reason in response.json()["reason"]
    assert response.headers["www-authenticate"].startswith('Bearer realm="collections-voice"')


def test_bearer_scheme_is_case_insensitive(sqlite_world: World) -> None:
    headers = {"Authorization": f"bearer {sqlite_world.tokens['admin']}"}
    assert request(sqlite_world.app, "GET", "/api/audit", headers=headers).status_code == 200


def test_openapi_lists_every_route_with_its_roles(sqlite_world: World) -> None:
    response = request(sqlite_world.app, "GET", "/api/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    documented = {
        f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops
    }
    routes = {
        f"{method} {API_PREFIX}{route.path}"
        for route in ROUTES
        for method in (route.methods or set()) - {"HEAD"}  # type: ignore[attr-defined]
    }
    assert documented == routes
    audit = spec["paths"]["/api/audit"]["get"]
    assert audit["x-roles"] == ["admin", "compliance"]
    assert {p["name"] for p in audit["parameters"]} == {
        "since", "until", "user", "action", "target", "after", "limit"
    }  # fmt: skip
    assert spec["paths"]["/api/openapi.json"]["get"]["security"] == []
    post = spec["paths"]["/api/accounts/{number}/notes"]["post"]
    assert "201" in post["responses"] and "requestBody" in post


def test_build_app_serves_the_api_next_to_healthz(tmp_path: Path) -> None:
    """The app `voice serve` runs, built around a stand-in supervisor (no workers)."""
    cfg = from_mapping({}, {"VOICE_DATA_DIR": str(tmp_path)})
    world = make_world(cfg.database_url)

    class Supervisor:
        def __init__(self) -> None:
            self.cfg = cfg

        async def health(self) -> dict[str, object]:
            return {"status": "ok"}

    app = build_app(Supervisor())
    token = world.tokens["supervisor"]
    notes = request(app, "GET", "/api/accounts/20001/notes",
                    headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert notes.json()["notes"][0]["body"] == "other note"
    assert request(app, "GET", "/healthz").json() == {"status": "ok"}
    assert request(app, "GET", "/nowhere").status_code == 404
    world.engine.dispose()
