"""The recordings API as compliance and collectors use it: real FLAC files, SQLite and
PostgreSQL, HTTP Range returning the right bytes, downloads hashing to the stored SHA-256,
legal hold against the purge, path tricks refused, an audit row for every access."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from accounts.models import Recording, Transcript
from recordings.retention import Retention
from tests.unit.apiworld import CLIENT, World, add_recording, make_world
from voice.api.auth import DENIED
from voice.api.recording_audio import _Unsatisfiable, parse_range


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    w = make_world(database_url, tmp_path / "recordings")
    w.root = tmp_path / "recordings"  # type: ignore[attr-defined]
    yield w
    w.engine.dispose()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One SQLite world for the many read-only cases (storage runs on both backends above)."""
    tmp = tmp_path_factory.mktemp("recapi")
    w = make_world(f"sqlite:///{tmp / 'voice.db'}", tmp / "recordings")
    w.root = tmp / "recordings"  # type: ignore[attr-defined]
    yield w
    w.engine.dispose()


def _own(world: World) -> str:
    return world.targets["own"]["recording_id"]


def _file(world: World, rid: str) -> bytes:
    with world.sessions() as session:
        rec = session.get(Recording, int(rid))
        assert rec is not None
        return (world.root / rec.path).read_bytes()  # type: ignore[attr-defined]


def _audit(world: World, before: int) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    return [(r.action, r.user_name, r.target_id, r.detail) for r in world.audit_since(before)]


# -- audio --------------------------------------------------------------------------------


def test_download_hashes_to_the_stored_sha256(world: World) -> None:
    rid = _own(world)
    meta = world.request("GET", f"/api/recordings/{rid}", "compliance").json()
    before = world.last_audit_id()
    response = world.request("GET", f"/api/recordings/{rid}/audio?download=1", "compliance")
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == meta["sha256"]
    assert len(response.content) == meta["bytes"]
    assert response.content[:4] == b"fLaC"
    headers = response.headers
    assert headers["content-type"] == "audio/flac"
    assert headers["content-disposition"] == f'attachment; filename="recording-{rid}.flac"'
    assert headers["accept-ranges"] == "bytes"
    assert headers["cache-control"] == "private, no-store"
    assert headers["etag"] == f'"{meta["sha256"]}"'
    digest = base64.b64encode(bytes.fromhex(meta["sha256"])).decode()
    assert headers["repr-digest"] == f"sha-256=:{digest}:"
    [row] = world.audit_since(before)
    assert (row.action, row.user_name, row.client_addr, row.target_id) == (
        "recording.download",
        "cora",
        CLIENT,
        rid,
    )
    assert row.detail["account"] == "10042"
    # Played (not downloaded): inline, and audited as such.
    before = world.last_audit_id()
    played = world.request("GET", f"/api/recordings/{rid}/audio", "collector")
    assert played.headers["content-disposition"].startswith("inline;")
    assert _audit(world, before)[0][:2] == ("recording.play", "dana")


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, None),
        ("bytes=-50", -50, None),
        ("bytes=10-99999999", 10, None),
        ("Bytes=5-9", 5, 9),  # the unit is case-insensitive
    ],
)
def test_range_returns_exactly_those_bytes(
    shared: World, header: str, first: int, last: int | None
) -> None:
    rid = _own(shared)
    data = _file(shared, rid)
    size = len(data)
    before = shared.last_audit_id()
    response = shared.request(
        "GET", f"/api/recordings/{rid}/audio", "admin", headers={"Range": header}
    )
    assert response.status_code == 206, response.text
    start = first % size
    end = size - 1 if last is None else last
    assert response.content == data[start : end + 1]
    assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
    assert response.headers["content-length"] == str(end - start + 1)
    [(action, _, _, detail)] = _audit(shared, before)
    assert action == "recording.play" and detail["range"] == header


@pytest.mark.parametrize(
    "header", ["bytes=999999-", "bytes=5-2", "bytes=-0", "bytes=abc", "bytes=-", "bytes=1-2-3"]
)
def test_unsatisfiable_ranges_get_416(shared: World, header: str) -> None:
    rid = _own(shared)
    size = len(_file(shared, rid))
    response = shared.request(
        "GET", f"/api/recordings/{rid}/audio", "admin", headers={"Range": header}
    )
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{size}"
    assert response.content == b""


@pytest.mark.parametrize("header", ["items=0-5", "bytes=0-5,10-20"])
def test_ranges_we_do_not_serve_get_the_whole_file(shared: World, header: str) -> None:
    rid = _own(shared)
    response = shared.request(
        "GET", f"/api/recordings/{rid}/audio", "admin", headers={"Range": header}
    )
    assert (response.status_code, response.content) == (200, _file(shared, rid))


def test_if_range_with_another_etag_sends_the_whole_file(shared: World) -> None:
    rid = _own(shared)
    etag = shared.request("GET", f"/api/recordings/{rid}", "admin").json()["sha256"]
    path = f"/api/recordings/{rid}/audio"
    same = shared.request(
        "GET", path, "admin", headers={"Range": "bytes=0-3", "If-Range": f'"{etag}"'}
    )
    assert (same.status_code, same.content) == (206, b"fLaC")
    other = shared.request("GET", path, "admin", headers={"Range": "bytes=0-3", "If-Range": '"x"'})
    assert other.status_code == 200 and len(other.content) > 4


def test_head_gives_the_size_without_the_audio(shared: World) -> None:
    rid = _own(shared)
    response = shared.request("HEAD", f"/api/recordings/{rid}/audio", "admin")
    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(_file(shared, rid)))
    assert response.content == b""


def test_parse_range_edges() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-", 10) == (0, 9)
    assert parse_range("bytes=-20", 10) == (0, 9)
    with pytest.raises(_Unsatisfiable):
        parse_range("bytes=0-0", 0)
    with pytest.raises(_Unsatisfiable):
        parse_range("bytes=" + "9" * 30 + "-", 10)


def test_a_tampered_file_fails_verify_and_a_missing_one_is_404(world: World) -> None:
    rid = _own(world)
    good = world.request("POST", f"/api/recordings/{rid}/verify", "compliance").json()
    assert good["ok"] is True and good["result"] == "ok"
    with world.sessions() as session:
        rec = session.get(Recording, int(rid))
        assert rec is not None
        path = world.root / rec.path  # type: ignore[attr-defined]
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    before = world.last_audit_id()
    bad = world.request("POST", f"/api/recordings/{rid}/verify", "compliance").json()
    assert (bad["ok"], bad["result"]) == (False, "mismatch")
    assert bad["actual_sha256"] != bad["expected_sha256"] == good["expected_sha256"]
    assert _audit(world, before)[0][0] == "recording.verify"
    assert _audit(world, before)[0][3]["result"] == "mismatch"
    path.unlink()
    before = world.last_audit_id()
    response = world.request("GET", f"/api/recordings/{rid}/audio", "compliance")
    assert response.status_code == 404 and "missing" in response.json()["reason"]
    assert _audit(world, before)[0][0] == DENIED


# -- collectors, search -------------------------------------------------------------------


def test_collector_sees_only_own_accounts_recordings(world: World) -> None:
    own, other = _own(world), world.targets["other"]["recording_id"]
    listed = world.request("GET", "/api/recordings", "collector").json()["recordings"]
    assert [r["id"] for r in listed] == [int(own)]
    assert listed[0]["audio_url"] == f"/api/recordings/{own}/audio"
    assert "path" not in listed[0]
    everyone = world.request("GET", "/api/recordings", "supervisor").json()["recordings"]
    assert {r["id"] for r in everyone} == {int(own), int(other)}
    for path in (f"/api/recordings/{other}", f"/api/recordings/{other}/audio"):
        before = world.last_audit_id()
        response = world.request("GET", path, "collector")
        assert response.status_code == 404
        [(action, user, target, detail)] = _audit(world, before)
        assert (action, user, target) == (DENIED, "dana", other)
        assert detail["reason"] == "recording of an account not assigned to this collector"
    # A recording of a call with no account: nobody's, so no collector's.
    orphan = add_recording(world.sessions, world.root, "NOPE")  # type: ignore[attr-defined]
    assert world.request("GET", f"/api/recordings/{orphan}", "collector").status_code == 404
    assert world.request("GET", f"/api/recordings/{orphan}", "supervisor").status_code == 200


def test_search_over_http(world: World) -> None:
    own = int(_own(world))
    with world.sessions.begin() as session:
        call_id = session.scalar(select(Recording.call_id).where(Recording.id == own))
        session.add(Transcript(call_id=call_id, speaker="caller", text="I paid by cheque"))
    today = dt.datetime.now(dt.UTC).date()

    def ids(query: str, who: str = "compliance") -> list[int]:
        response = world.request("GET", f"/api/recordings?{query}", who)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["recordings"]]

    assert ids("account=10042") == [own]
    assert ids("phone=%2B1%20212%20555%200101&direction=inbound&q=cheque") == [own]
    assert ids("q=cheque%20paid") == [own]
    assert ids("q=wire") == []
    assert ids("collector=Dana%20Whitfield") == [own]
    assert ids(f"from={today}&to={today}&account=10042") == [own]  # to: through that day
    assert ids(f"to={today - dt.timedelta(days=1)}") == []
    assert ids("account=20001", "collector") == []  # scope and filter intersect
    before = world.last_audit_id()
    ids("account=10042&q=cheque")
    [(action, user, _, detail)] = _audit(world, before)
    assert (action, user) == ("recordings.search", "cora")
    assert detail["filters"] == {"account": "10042", "q": "cheque"}
    assert detail["ids"] == [own]
    page = world.request("GET", "/api/recordings?limit=1", "admin").json()
    assert len(page["recordings"]) == 1 and page["next_offset"] == 1


@pytest.mark.parametrize(
    "query",
    [
        "phone=12ab",
        "direction=sideways",
        "from=yesterday",
        "from=2026-11-01T00:00",  # no offset
        "limit=0",
        "limit=501",
        "offset=-1",
        "acount=10042",
        "account=1&account=2",
        "q=" + "%00",
    ],
)
def test_bad_search_parameters_are_refused(shared: World, query: str) -> None:
    response = shared.request("GET", f"/api/recordings?{query}", "admin")
    assert response.status_code == 422, response.text


# -- legal hold ---------------------------------------------------------------------------


def test_hold_stops_the_purge_until_lifted(world: World) -> None:
    rid = _own(world)
    path = f"/api/recordings/{rid}/hold"
    before = world.last_audit_id()
    held = world.request("PUT", path, "compliance", json={"reason": "Matter 2026-17"})
    assert held.status_code == 200 and held.json()["legal_hold"] is True
    [(action, user, target, detail)] = _audit(world, before)
    assert (action, user, target) == ("recording.hold", "cora", rid)
    assert detail == {"changed": True, "reason": "Matter 2026-17"}

    retention = Retention(world.sessions, world.root, 1096)  # type: ignore[attr-defined]
    far = dt.datetime.now(dt.UTC) + dt.timedelta(days=5000)
    other = int(world.targets["other"]["recording_id"])
    assert retention.purge(far).deleted == [other]  # the one not held goes
    with world.sessions() as session:
        rec = session.get(Recording, int(rid))
        assert rec is not None and rec.status == "final"

    released = world.request("DELETE", path, "admin")
    assert released.status_code == 200 and released.json()["legal_hold"] is False
    assert int(rid) in retention.purge(far).deleted
    gone = world.request("GET", f"/api/recordings/{rid}/audio", "compliance")
    assert gone.status_code == 410
    meta = world.request("GET", f"/api/recordings/{rid}", "compliance").json()
    assert meta["status"] == "deleted" and meta["sha256"]  # the row and its hash remain
    again = world.request("PUT", path, "compliance", json={"reason": "too late"})
    assert again.status_code == 409 and "was deleted" in again.json()["reason"]


@pytest.mark.parametrize(
    "body", [{}, {"reason": ""}, {"reason": "x" * 501}, {"reason": 5}, {"reason": "a\x00"}]
)
def test_hold_needs_a_reason(shared: World, body: dict[str, Any]) -> None:
    response = shared.request("PUT", f"/api/recordings/{_own(shared)}/hold", "admin", json=body)
    assert response.status_code == 422


# -- path tricks --------------------------------------------------------------------------


@pytest.fixture
def sql(shared: World) -> Iterator[list[str]]:
    statements: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(shared.engine, "before_cursor_execute", capture)
    yield statements
    event.remove(shared.engine, "before_cursor_execute", capture)


@pytest.mark.parametrize(
    "path",
    [
        "/api/recordings/%2e%2e",  # (a literal /.. is resolved away by the client itself)
        "/api/recordings/%2e%2e/audio",
        "/api/recordings/..%2F..%2Fvoice.db/audio",
        "/api/recordings/1%2F..%2F2/audio",
        "/api/recordings/-1/audio",
        "/api/recordings/0",
        "/api/recordings/1.0",
        "/api/recordings/0x1/audio",
        "/api/recordings/1%20OR%201=1",
        "/api/recordings/" + "9" * 19,
        "/api/recordings/%00/audio",
    ],
)
def test_path_tricks_are_refused_before_any_data_query(
    shared: World, sql: list[str], path: str
) -> None:
    response = shared.request("GET", path, "admin")
    assert response.status_code in (404, 405), response.text
    assert all("users.token_hash = " in s for s in sql), sql


def test_a_stored_path_leading_out_is_never_served(world: World, tmp_path: Path) -> None:
    rid = _own(world)
    (tmp_path / "secret.txt").write_text("not a recording")
    with world.sessions.begin() as session:
        rec = session.get(Recording, int(rid))
        assert rec is not None
        rec.path = "../secret.txt"
    response = world.request("GET", f"/api/recordings/{rid}/audio", "admin")
    assert response.status_code == 404
    assert b"not a recording" not in response.content
    verified = world.request("POST", f"/api/recordings/{rid}/verify", "admin").json()
    assert verified["result"] == "unsafe"
