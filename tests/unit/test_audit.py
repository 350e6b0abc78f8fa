"""The audit log on SQLite and PostgreSQL: appending, filtering, refusing every change, and
GET /api/audit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, text, update
from sqlalchemy.exc import DatabaseError

from accounts import audit
from accounts.models import AuditEntry
from accounts.users import Principal
from tests.unit.apiworld import World, make_world

ALICE = Principal(id=1, name="alice", role="compliance", collector_id=None)


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


def _actions(world: World, after: int = 0) -> list[str]:
    return [row.action for row in world.audit_since(after)]


def test_record_commits_alone_or_with_the_callers_transaction(world: World) -> None:
    start = world.last_audit_id()
    user = Principal(world_user_id(world, "cora"), "cora", "compliance", None)
    entry = audit.record(world.sessions, user, "10.0.0.7", "recording.play", "recording", 7,
                         {"range": "bytes=0-"})  # fmt: skip
    assert entry.id > start and entry.target_id == "7"
    with world.sessions() as session:
        audit.record(session, user, "10.0.0.7", "recording.download", "recording", 7)
        session.rollback()  # the access failed: its row goes with it
    with world.sessions.begin() as session:
        audit.record(session, None, None, "user.token", "user", "cora")
    rows = world.audit_since(start)
    assert [(r.action, r.user_name, r.role, r.client_addr) for r in rows] == [
        ("recording.play", "cora", "compliance", "10.0.0.7"),
        ("user.token", "cli", "system", None),
    ]
    assert rows[0].detail == {"range": "bytes=0-"} and rows[0].at.tzinfo is dt.UTC


def world_user_id(world: World, name: str) -> int:
    from accounts.users import Users

    return Users(world.sessions).get(name).id


def test_orm_refuses_to_change_or_delete_an_entry(world: World) -> None:
    with world.sessions() as session:
        entry = session.get(AuditEntry, 1)
        assert entry is not None
        entry.action = "nothing.happened"
        with pytest.raises(audit.AuditLogIsAppendOnly):
            session.flush()
        session.rollback()
        session.delete(session.get(AuditEntry, 1))
        with pytest.raises(audit.AuditLogIsAppendOnly):
            session.flush()


@pytest.mark.parametrize(
    "statement",
    [
        update(AuditEntry).values(user_name="nobody"),
        delete(AuditEntry),
        text("UPDATE audit_log SET action = 'x'"),
        text("DELETE FROM audit_log"),
    ],
    ids=["orm-update", "orm-delete", "sql-update", "sql-delete"],
)
def test_database_refuses_to_change_or_delete_entries(world: World, statement: object) -> None:
    before = _actions(world)
    with world.engine.connect() as conn:
        with pytest.raises(DatabaseError, match="append-only"):
            conn.execute(statement)  # type: ignore[call-overload]
        conn.rollback()
    assert _actions(world) == before


def test_postgresql_refuses_truncate(postgres_url: str) -> None:
    w = make_world(postgres_url)
    try:
        with w.engine.connect() as conn, pytest.raises(DatabaseError, match="append-only"):
            conn.execute(text("TRUNCATE audit_log"))
    finally:
        w.engine.dispose()


def test_api_filters_and_audits_its_own_reads(world: World) -> None:
    note_id = world.targets["own"]["note_id"]
    world.request("GET", f"/api/notes/{note_id}", "collector")
    world.request("GET", "/api/audit", "collector")  # refused, and recorded as such
    reads = world.request("GET", "/api/audit?user=dana&action=note.read", "compliance").json()
    assert [(e["user"], e["action"], e["target_id"]) for e in reads["entries"]] == [
        ("dana", "note.read", note_id)
    ]
    denied = world.request("GET", "/api/audit?action=access.denied", "admin").json()["entries"]
    assert [(e["user"], e["target_id"], e["detail"]["status"]) for e in denied] == [
        ("dana", "GET /api/audit", 403)
    ]
    mine = world.request("GET", "/api/audit?user=cora&action=audit.read", "admin").json()
    (entry,) = mine["entries"]
    assert entry["detail"]["filters"]["action"] == "note.read"
    assert entry["role"] == "compliance" and entry["client_addr"] == "127.0.0.1"


def test_api_since_and_paging(world: World) -> None:
    everything = world.request("GET", "/api/audit?limit=1000", "admin").json()["entries"]
    assert len(everything) >= 6  # five users created, one disabled
    page = world.request("GET", "/api/audit?limit=2", "admin").json()
    assert [e["id"] for e in page["entries"]] == [everything[0]["id"], everything[1]["id"]]
    after = world.request("GET", f"/api/audit?after={page['next_after']}&limit=1", "admin")
    assert after.json()["entries"][0]["id"] == everything[2]["id"]
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    for since in (future, future.replace("+00:00", "Z"), future.replace("+", " ")):
        response = world.request("GET", "/api/audit", "admin", params={"since": since})
        assert response.status_code == 200, (since, response.text)
        assert response.json() == {"entries": [], "next_after": None}
    today = dt.datetime.now(dt.UTC).date().isoformat()
    response = world.request("GET", f"/api/audit?since={today}", "admin")
    assert len(response.json()["entries"]) > 0


@pytest.mark.parametrize(
    "query",
    [
        "since=2026-13-01",
        "since=2026-11-01T00:00:00",  # no offset: which clock?
        "since=yesterday",
        "limit=0",
        "limit=5000",
        "after=-1",
        "user=" + "u" * 101,
        "action=%00",
        "who=dana",
        "user=a&user=b",
    ],
)
def test_api_refuses_bad_filters(sqlite_world: World, query: str) -> None:
    response = sqlite_world.request("GET", f"/api/audit?{query}", "admin")
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid request"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_api_has_no_way_to_change_the_log(sqlite_world: World, method: str) -> None:
    before = sqlite_world.last_audit_id()
    assert sqlite_world.request(method, "/api/audit", "admin").status_code == 405
    assert sqlite_world.request(method, "/api/audit/1", "admin").status_code in (404, 405)
    assert sqlite_world.last_audit_id() == before
