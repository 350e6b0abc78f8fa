"""A small world for API tests: the demo accounts, one user per role, a note on each side.

Dana Whitfield's collector user `dana` owns account 10042 ("own" targets); account 20001
belongs to Marcus Lee ("other" targets); 30003 has no collector. `World.targets` maps each
path parameter name to its own/other value; an endpoint with a new path parameter (say
`{recording_id}`) adds a row for it in `make_world`. With `recordings_root`, each side also
has a final recording (a real FLAC there): `recording_id`.

Requests go through httpx's ASGI transport (starlette's TestClient warns with httpx), one
event loop per request, so tests stay plain functions.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp

from accounts.db import create_schema, make_engine, make_sessions
from accounts.demo import load_demo_if_empty
from accounts.models import Account, AuditEntry, Call, Collector, Note, Recording
from accounts.users import Users, generate_token
from recordings.paths import relative_path
from tests.unit.recdata import write_flac
from voice.api import build_api
from voice.config import from_mapping

CLIENT = "127.0.0.1"  # httpx's ASGI transport presents requests as from here


@dataclass
class World:
    engine: Engine
    sessions: sessionmaker[Session]
    app: ASGIApp
    tokens: dict[str, str | None]  # caller -> bearer token (None: no header)
    names: dict[str, str]  # caller -> user name, for callers that are users
    targets: dict[str, dict[str, str]] = field(default_factory=dict)  # "own"/"other" -> params

    def request(self, method: str, path: str, caller: str, **kwargs: Any) -> httpx.Response:
        token = self.tokens[caller]
        headers = dict(kwargs.pop("headers", None) or {})  # e.g. Range
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return request(self.app, method, path, headers=headers, **kwargs)

    @property
    def api_state(self) -> Any:
        """The API app's `state` (cfg, fleet, clock) inside the /api mount."""
        return self.app.routes[0].app.state  # type: ignore[attr-defined]

    @property
    def fleet(self) -> FakeFleet:
        return self.api_state.fleet

    def last_audit_id(self) -> int:
        with self.sessions() as session:
            return session.scalar(select(func.coalesce(func.max(AuditEntry.id), 0))) or 0

    def audit_since(self, after_id: int) -> list[AuditEntry]:
        with self.sessions() as session:
            stmt = select(AuditEntry).where(AuditEntry.id > after_id).order_by(AuditEntry.id)
            return list(session.scalars(stmt))


def request(app: ASGIApp, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.request(method, path, **kwargs)

    return asyncio.run(go())


def add_note(sessions: sessionmaker[Session], number: str, body: str) -> int:
    with sessions.begin() as session:
        account_id = session.scalar(select(Account.id).where(Account.number == number))
        note = Note(account_id=account_id, author="ivr", kind="call", body=body)
        session.add(note)
        session.flush()
        return note.id


def _add_call(session: Session, number: str, status: str) -> Call:
    """An inbound IVR call from the demo caller on account `number`."""
    account_id = session.scalar(select(Account.id).where(Account.number == number))
    call = Call(
        direction="inbound",
        caller="+12125550101",
        callee="ivr",
        account_id=account_id,
        worker="w0",
        sip_call_id=f"{status}-{number}",
        status=status,
    )
    session.add(call)
    session.flush()
    return call


def dana_dialable(sessions: sessionmaker[Session]) -> None:
    """Give Dana a SIP URI a worker would ring: the demo's example.com ones are never dialled."""
    with sessions.begin() as session:
        dana = session.scalar(select(Collector).where(Collector.name == "Dana Whitfield"))
        assert dana is not None
        dana.sip_uri = "sip:dana@127.0.0.1:5099"


def add_live_call(sessions: sessionmaker[Session], number: str) -> int:
    """A call in progress on account `number` (for the calls-in-progress endpoints)."""
    with sessions.begin() as session:
        return _add_call(session, number, "in_progress").id


class FakeFleet:
    """Stands in for the supervisor's control channel: the role matrix is about who may ask;
    tests/integration/test_call_recording.py proves a real worker pauses a real recording."""

    def __init__(self, sessions: sessionmaker[Session] | None = None) -> None:
        self.asked: list[tuple[int, bool]] = []
        self.placed: list[dict[str, object]] = []
        self.sessions = sessions  # given: a placed call is journaled, as a worker does

    async def pause_recording(self, call_id: int, paused: bool) -> dict[str, object]:
        self.asked.append((call_id, paused))
        return {"call_id": call_id, "paused": paused, "at_s": 1.0}

    async def click_to_call(self, **request: object) -> dict[str, object]:
        self.placed.append(request)
        call_id = 900 + len(self.placed)
        if self.sessions is not None:  # the API waits for the call's row before answering
            with self.sessions.begin() as session:
                call = Call(id=call_id, direction="outbound", callee=str(request["customer"]),
                            account_id=request["account_id"], worker="w1",
                            sip_call_id=f"placed-{call_id}", status="in_progress")  # fmt: skip
                session.add(call)
        return {"call_id": call_id, "worker": "w1"}

    async def live_transcript(self, call_id: int) -> dict[str, object]:
        return {"call_id": call_id, "segments": [], "partial": {"caller": "마지막"}}


def add_recording(sessions: sessionmaker[Session], root: Path, number: str) -> int:
    """A finished call on account `number` with a final recording: a real FLAC under `root`."""
    with sessions.begin() as session:
        call = _add_call(session, number, "completed")
        rec = Recording(call_id=call.id, path="pending", sample_rate=16000, status="final")
        session.add(rec)
        session.flush()
        rec.path = relative_path(call.id, rec.id, rec.started_at, "flac")
        rec.sha256, rec.bytes = write_flac(root / rec.path)
        return rec.id


def make_world(
    database_url: str, recordings_root: Path | None = None, busy_timeout_ms: int = 5000
) -> World:
    engine = make_engine(database_url, busy_timeout_ms=busy_timeout_ms)
    create_schema(engine)
    sessions = make_sessions(engine)
    load_demo_if_empty(sessions)
    users = Users(sessions)
    tokens: dict[str, str | None] = {"anonymous": None, "bad_token": generate_token()}
    names = {}
    for caller, name, role, collector in [
        ("collector", "dana", "collector", "Dana Whitfield"),
        ("supervisor", "sam", "supervisor", None),
        ("compliance", "cora", "compliance", None),
        ("admin", "ada", "admin", None),
        ("disabled", "olga", "admin", None),  # the most powerful role, still refused
    ]:
        _, tokens[caller] = users.add(name, role, collector)
        names[caller] = name
    users.disable("olga")
    targets = {
        "own": {"number": "10042", "note_id": str(add_note(sessions, "10042", "own note"))},
        "other": {"number": "20001", "note_id": str(add_note(sessions, "20001", "other note"))},
    }
    for side, number in (("own", "10042"), ("other", "20001")):
        targets[side]["call_id"] = str(add_live_call(sessions, number))
    cfg = None
    if recordings_root is not None:
        cfg = from_mapping({"recordings": {"dir": str(recordings_root)}}, {})
        for side, number in (("own", "10042"), ("other", "20001")):
            targets[side]["recording_id"] = str(add_recording(sessions, recordings_root, number))
    app = build_api(sessions, cfg, fleet=FakeFleet(sessions))
    return World(engine, sessions, app, tokens, names, targets)
