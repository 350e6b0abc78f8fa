"""The attempt limit cannot be raced: 20 requests for an account's last allowed attempt, at once.

12 CFR 1006.14(b)(2)(i) allows 7 attempts in 7 days. An account with 6 gets 20 concurrent
`POST /api/calls` through a real uvicorn server (its threadpool runs the checks side by side)
on real SQLite and real PostgreSQL: exactly one reaches the fleet, 19 are refused with the
rule. The fleet is a stand-in that journals the call the way the worker does (the call row on
the account, attached to its reservation), because the property is about the database: the
dials it counts are what a real fleet would place. Softphone calls (the worker's check,
voice/calls/outbound.py) take the same reservation, so they race the API fairly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from accounts.attempts import attach
from accounts.call_journal import CallJournal
from accounts.guardrails import Guardrails, Refusal
from accounts.models import Account, Call, Collector, OutboundAttempt, Softphone
from tests.unit.apiworld import World, dana_dialable, make_world
from voice.calls import outbound
from voice.config import from_mapping

NEW_YORK = ZoneInfo("America/New_York")
NOW = dt.datetime(2026, 11, 4, 10, 0, tzinfo=NEW_YORK)
REQUESTS = 20
CUSTOMER = "+12125550101"  # account 10042's first contact in the demo data


class JournalingFleet:
    """Counts dials and journals each call as voice/calls/placed.py `click_to_call` does."""

    def __init__(self, world: World, fail: bool = False) -> None:
        self.journal = CallJournal(world.sessions)
        self.sessions = world.sessions
        self.fail = fail
        self.placed: list[dict[str, Any]] = []

    async def click_to_call(self, **request: Any) -> dict[str, Any]:
        await asyncio.sleep(0.02)  # the collector's leg being placed: the old race window
        if self.fail:
            raise RuntimeError("no call worker has 2 free slot(s)")
        self.placed.append(request)
        return {"call_id": await asyncio.to_thread(self._journal, request), "worker": "w1"}

    def _journal(self, request: dict[str, Any]) -> int:
        call_id = self.journal.start_call(
            direction="outbound", caller=None, callee=request["customer"], worker="w1",
            sip_call_id=f"race-{len(self.placed)}",
        )  # fmt: skip
        if request.get("attempt") is None:
            self.journal.set_account(call_id, request["account_id"])
        else:
            attach(self.sessions, request["attempt"], call_id)
        return call_id


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    w = make_world(database_url)
    w.api_state.clock = lambda: NOW
    dana_dialable(w.sessions)
    yield w
    w.engine.dispose()


def account_id(world: World, number: str = "10042") -> int:
    with world.sessions() as session:
        found = session.scalar(select(Account.id).where(Account.number == number))
        assert found is not None
        return found


def six_attempts(world: World) -> None:
    """Six outbound calls this week: the seventh is the last one the rule allows."""
    journal = CallJournal(world.sessions)
    for n in range(6):
        call_id = journal.start_call(direction="outbound", caller=None, callee=CUSTOMER,
                                     worker="w1", sip_call_id=f"earlier-{n}")  # fmt: skip
        journal.set_account(call_id, account_id(world))
        with world.sessions.begin() as session:
            call = session.get(Call, call_id)
            assert call is not None
            call.started_at = dt.datetime(2026, 11, 2, 15, n, tzinfo=dt.UTC)


class Server:
    """The API app under a real uvicorn on 127.0.0.1, in a thread of its own."""

    def __init__(self, world: World) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(world.app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> Server:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            threading.Event().wait(0.025)
        raise RuntimeError("uvicorn did not start within 5 s")

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def post_at_once(server: Server, token: str, n: int = REQUESTS) -> list[httpx.Response]:
    """`n` POST /api/calls in flight together (one connection each), released by one barrier."""

    async def go() -> list[httpx.Response]:
        start = asyncio.Event()
        limits = httpx.Limits(max_connections=n)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as client:

            async def one() -> httpx.Response:
                await start.wait()
                return await client.post("/api/calls", json={"account": "10042"}, headers=headers)

            tasks = [asyncio.create_task(one()) for _ in range(n)]
            await asyncio.sleep(0.05)
            start.set()
            return await asyncio.gather(*tasks)

    return asyncio.run(go())


def test_twenty_at_once_for_the_last_attempt_dial_exactly_once(world: World) -> None:
    six_attempts(world)
    fleet = world.api_state.fleet = JournalingFleet(world)
    token = world.tokens["collector"]
    assert token
    before = world.last_audit_id()
    with Server(world) as server:
        responses = post_at_once(server, token)
    codes = sorted(r.status_code for r in responses)
    assert codes == [202] + [409] * (REQUESTS - 1), [r.text for r in responses]
    assert len(fleet.placed) == 1
    refused = [r.json() for r in responses if r.status_code == 409]
    assert {body["rule"] for body in refused} == {"attempt_limit"}
    assert all("7 outbound calls" in body["reason"] for body in refused)
    actions = sorted(a.action for a in world.audit_since(before))
    assert actions == ["call.place"] + ["call.refused"] * (REQUESTS - 1)
    # The one that dialled is one attempt, not two: its reservation and its call row are one.
    guard = Guardrails(from_mapping({}).guardrails, world.sessions, lambda: NOW)
    with world.sessions() as session:
        [attempt] = session.scalars(select(OutboundAttempt))
        assert attempt.call_id is not None and attempt.released_at is None
    refusal = guard.check(account_id(world), CUSTOMER)
    assert refusal is not None and refusal.rule == "attempt_limit"
    assert "7 outbound calls" in refusal.reason


def test_a_dial_that_never_left_gives_its_attempt_back(world: World) -> None:
    six_attempts(world)
    world.api_state.fleet = JournalingFleet(world, fail=True)
    response = world.request("POST", "/api/calls", "collector", json={"account": "10042"})
    assert response.status_code == 503, response.text
    with world.sessions() as session:
        [attempt] = session.scalars(select(OutboundAttempt))
        assert attempt.released_at is not None and attempt.call_id is None
        assert "no call worker" in (attempt.release_reason or "")
    fleet = world.api_state.fleet = JournalingFleet(world)
    response = world.request("POST", "/api/calls", "collector", json={"account": "10042"})
    assert response.status_code == 202, response.text  # the seventh, still allowed
    response = world.request("POST", "/api/calls", "collector", json={"account": "10042"})
    assert response.status_code == 409 and response.json()["rule"] == "attempt_limit"
    assert len(fleet.placed) == 1


def test_a_reservation_counts_before_its_call_is_journaled(world: World) -> None:
    """A request the fleet has not answered yet holds its attempt: the next one is refused."""
    six_attempts(world)
    guard = Guardrails(from_mapping({}).guardrails, world.sessions, lambda: NOW)
    with world.sessions.begin() as session:
        reserved = guard.reserve(session, account_id(world), CUSTOMER, "test")
    assert isinstance(reserved, int)
    refusal = guard.check(account_id(world), CUSTOMER)
    assert refusal is not None and refusal.rule == "attempt_limit"


def test_softphone_calls_and_api_calls_share_the_last_attempt(world: World) -> None:
    """10 softphone checks (the worker's path) and 10 API requests at once: one call."""
    six_attempts(world)
    with world.sessions.begin() as session:
        dana = session.scalar(select(Collector.id).where(Collector.name == "Dana Whitfield"))
        session.add(Softphone(username="dana", realm="r", ha1="0" * 32, ha1b="0" * 32,
                              collector_id=dana))  # fmt: skip
    fleet = world.api_state.fleet = JournalingFleet(world)
    cfg = from_mapping({})
    guard = Guardrails(cfg.guardrails, world.sessions, lambda: NOW)
    start = threading.Barrier(REQUESTS // 2)

    def softphone() -> outbound.SoftphoneCall | Refusal:
        start.wait(10)
        with world.sessions.begin() as session:  # as voice/calls/placed.py `softphone` does
            return outbound.check_softphone_call(cfg, session, guard, "dana", "2125550101")

    token = world.tokens["collector"]
    assert token
    with Server(world) as server, ThreadPoolExecutor(REQUESTS // 2) as pool:
        decided = [pool.submit(softphone) for _ in range(REQUESTS // 2)]
        responses = post_at_once(server, token, REQUESTS // 2)
        decisions = [f.result(30) for f in decided]
    calls = [d for d in decisions if isinstance(d, outbound.SoftphoneCall)]
    refusals = [d for d in decisions if isinstance(d, Refusal)]
    assert {r.rule for r in refusals} <= {"attempt_limit"}
    refused = [r for r in responses if r.status_code == 409]
    assert {r.json()["rule"] for r in refused} <= {"attempt_limit"}
    assert len(calls) + len(fleet.placed) == 1, (decisions, [r.text for r in responses])
    assert len(refusals) + len(refused) == REQUESTS - 1
    if calls:
        assert calls[0].attempt is not None and calls[0].account == "10042"
