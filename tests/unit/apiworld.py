"""A small world for API tests: the demo accounts, one user per role, a note on each side.

Dana Whitfield's collector user `dana` owns account 10042 ("own" targets); account 20001
belongs to Marcus Lee ("other" targets); 30003 has no collector. `World.targets` maps each
path parameter name to its own/other value; an endpoint with a new path parameter (say
`{recording_id}`) adds a row for it in `make_world`.

Requests go through httpx's ASGI transport (starlette's TestClient warns with httpx), one
event loop per request, so tests stay plain functions.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp

from accounts.db import create_schema, make_engine, make_sessions
from accounts.demo import load_demo_if_empty
from accounts.models import Account, AuditEntry, Note
from accounts.users import Users, generate_token
from voice.api import build_api

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
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return request(self.app, method, path, headers=headers, **kwargs)

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


def make_world(database_url: str) -> World:
    engine = make_engine(database_url)
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
    return World(engine, sessions, build_api(sessions), tokens, names, targets)
