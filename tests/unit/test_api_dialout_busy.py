"""Make a Call when the database or the worker cannot answer now: a 503 that says why and
when to try again, never a 500, and the reserved attempt given back.

SQLite's write lock is held for real by another connection (BEGIN EXCLUSIVE), past the API
engine's short busy timeout, as 50 busy workers hold it on a saturated machine."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from accounts.models import OutboundAttempt
from tests.unit.apiworld import World, dana_dialable, make_world
from voice.api import dialout
from voice.control import ControlError

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(f"sqlite:///{tmp_path / 'voice.db'}", busy_timeout_ms=50)
    w.api_state.clock = lambda: dt.datetime(2026, 11, 4, 10, 0, tzinfo=NEW_YORK)
    dana_dialable(w.sessions)
    yield w
    w.engine.dispose()


@pytest.fixture
def holder(world: World, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(
        tmp_path / "voice.db", isolation_level=None, timeout=5, check_same_thread=False
    )
    yield conn
    conn.close()


def call(world: World):  # noqa: ANN201 - httpx.Response
    return world.request("POST", "/api/calls", "collector", json={"account": "10042"})


def attempts(world: World) -> list[tuple[int | None, str | None]]:
    with world.sessions() as session:
        rows = session.execute(
            select(OutboundAttempt.call_id, OutboundAttempt.release_reason).order_by(
                OutboundAttempt.id
            )
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_a_database_locked_past_the_retries_is_a_503_to_try_again(
    world: World, holder: sqlite3.Connection
) -> None:
    holder.execute("BEGIN EXCLUSIVE")
    try:
        response = call(world)
    finally:
        holder.execute("ROLLBACK")
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": "unavailable",
        "reason": "the database is busy: try again in a moment",
    }
    assert response.headers["Retry-After"] == "2"
    assert world.fleet.placed == [] and attempts(world) == []
    # Once it is free the same request goes through.
    assert call(world).status_code == 202
    assert len(world.fleet.placed) == 1


def test_a_lock_that_frees_within_the_busy_timeout_is_waited_for(tmp_path: Path) -> None:
    """The reservation is tried once (a second try took the answer past a client's 10 s):
    the engine's busy timeout is what waits for a lock held briefly."""
    path = tmp_path / "patient.db"
    world = make_world(f"sqlite:///{path}", busy_timeout_ms=3000)
    world.api_state.clock = lambda: dt.datetime(2026, 11, 4, 10, 0, tzinfo=NEW_YORK)
    dana_dialable(world.sessions)
    holder = sqlite3.connect(path, isolation_level=None, timeout=5, check_same_thread=False)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        timer = threading.Timer(0.15, holder.execute, ("ROLLBACK",))
        timer.start()
        try:
            response = call(world)
        finally:
            timer.join()
        assert response.status_code == 202, response.text
        assert len(world.fleet.placed) == 1 and len(attempts(world)) == 1
    finally:
        holder.close()
        world.engine.dispose()


def test_a_worker_that_does_not_answer_in_time_is_a_503_and_the_attempt_is_given_back(
    world: World,
) -> None:
    async def no_answer(**request: object) -> dict[str, object]:
        raise ControlError("w3.sock: no answer to click_to_call within 10 s")

    world.fleet.click_to_call = no_answer  # type: ignore[method-assign]
    response = call(world)
    assert response.status_code == 503, response.text
    assert response.json()["reason"] == "w3.sock: no answer to click_to_call within 10 s"
    assert response.headers["Retry-After"] == "5"
    [(call_id, reason)] = attempts(world)
    assert call_id is None and reason is not None and "no answer to click_to_call" in reason


def test_the_answer_waits_for_the_calls_row_so_its_status_url_is_readable(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's rows go behind the call: the 202 waits for them (bounded), so the client's
    first GET of status_url finds the call; a row that never lands does not hold it longer."""
    journal = world.fleet.click_to_call

    async def rows_later(**request: object) -> dict[str, object]:
        sessions, world.fleet.sessions = world.fleet.sessions, None
        placed = await journal(**request)  # answered, the call not journaled yet
        world.fleet.sessions = sessions
        later = threading.Timer(0.6, lambda: asyncio.run(journal(**request)))
        world.fleet.placed.pop()
        later.start()
        return placed

    world.fleet.click_to_call = rows_later  # type: ignore[method-assign]
    response = call(world)
    assert response.status_code == 202, response.text
    status = world.request("GET", response.json()["status_url"], "collector")
    assert status.status_code == 200, status.text

    monkeypatch.setattr(dialout, "API_ANSWER_S", 1.0)
    world.fleet.click_to_call = lambda **request: asyncio.sleep(0, {"call_id": 77, "worker": "w1"})  # type: ignore[method-assign]
    started = time.monotonic()
    response = call(world)
    assert response.status_code == 202 and response.json()["call_id"] == 77
    assert time.monotonic() - started < 6.0  # its wait ran out, not the default 8 s
    assert world.request("GET", "/api/calls/77", "collector").status_code == 404
