"""The collections-rules API: marking outcomes, follow-ups due, and whether an account may be
called now, with what each user sees and the audit rows; the guardrails' clock is fixed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from starlette.routing import Mount

from accounts.models import Account, Call, Collector
from tests.unit.apiworld import World, make_world
from voice.api.auth import DENIED

NEW_YORK = ZoneInfo("America/New_York")  # the demo accounts' time zone
CALL_AT = dt.datetime(2099, 1, 2, 15, 0, tzinfo=dt.UTC)  # calls' start unless a test says


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 3, 12, 0, tzinfo=NEW_YORK)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    w = make_world(database_url)
    yield w
    w.engine.dispose()


@pytest.fixture(scope="module")
def sqlite_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world for tests that do not depend on the backend."""
    w = make_world(f"sqlite:///{tmp_path_factory.mktemp('outcomes') / 'voice.db'}")
    yield w
    w.engine.dispose()


def _set_clock(world: World) -> Clock:
    clock = Clock()
    [mount] = world.app.routes  # type: ignore[attr-defined]
    assert isinstance(mount, Mount)
    mount.app.state.clock = clock  # type: ignore[attr-defined]
    return clock


def _call(
    world: World, number: str | None, direction: str = "outbound", started_at: Any = CALL_AT
) -> int:
    with world.sessions.begin() as session:
        account_id = session.scalar(select(Account.id).where(Account.number == number))
        call = Call(
            direction=direction,
            caller="sip:dana@pbx",
            callee="+12125550101",
            account_id=account_id,
            worker="w0",
            sip_call_id=f"api-{number}-{started_at}",
            status="completed",
            started_at=started_at,
        )
        session.add(call)
        session.flush()
        return call.id


def _collector_id(world: World, name: str) -> int:
    with world.sessions() as session:
        found = session.scalar(select(Collector.id).where(Collector.name == name))
        assert found is not None
        return found


# -- outcome ------------------------------------------------------------------------------


def test_collector_marks_a_promise_on_own_call(world: World) -> None:
    call = _call(world, "10042")
    body = {"kind": "promise_to_pay", "amount_cents": 125000, "date": "2099-01-15"}
    body["text"] = "Will pay by ACH."
    before = world.last_audit_id()
    response = world.request("POST", f"/api/calls/{call}/outcome", "collector", json=body)
    assert response.status_code == 201, response.text
    out = response.json()
    assert {k: out[k] for k in ("call_id", "account", "kind", "amount_cents", "currency")} == {
        "call_id": call,
        "account": "10042",
        "kind": "promise_to_pay",
        "amount_cents": 125000,
        "currency": "USD",
    }
    assert (out["date"], out["text"], out["user"]) == ("2099-01-15", "Will pay by ACH.", "dana")
    [row] = world.audit_since(before)
    assert (row.action, row.target_type, row.target_id) == ("call.outcome", "call", str(call))
    assert row.detail == {"account": "10042", "kind": "promise_to_pay", "outcome_id": out["id"]}

    notes = world.request("GET", "/api/accounts/10042/notes", "collector").json()["notes"]
    assert (notes[0]["id"], notes[0]["kind"], notes[0]["author"]) == (
        out["note_id"],
        "outcome",
        "dana",
    )
    assert notes[0]["body"] == (
        f"Outcome of call {call}: promise to pay 1,250.00 USD by 2099-01-15.\nWill pay by ACH."
    )


def test_another_collectors_call_is_not_found(sqlite_world: World) -> None:
    call = _call(sqlite_world, "20001")
    before = sqlite_world.last_audit_id()
    response = sqlite_world.request(
        "POST", f"/api/calls/{call}/outcome", "collector", json={"kind": "reached"}
    )
    assert response.status_code == 404
    assert response.json() == {"error": "not found", "reason": f"no call {call}"}
    [row] = sqlite_world.audit_since(before)
    assert (row.action, row.detail["status"]) == (DENIED, 404)
    unknown = sqlite_world.request(
        "POST", "/api/calls/999999/outcome", "admin", json={"kind": "reached"}
    )
    assert unknown.status_code == 404
    marked = sqlite_world.request(
        "POST", f"/api/calls/{call}/outcome", "supervisor", json={"kind": "reached"}
    )
    assert marked.status_code == 201


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "kind is required: reached, no_answer, left_message, ..."),
        ({"kind": 3}, "kind is required: reached, no_answer, left_message, ..."),
        ({"kind": "paid"}, "kind must be one of reached, no_answer, left_message, promise_to_pay"),
        ({"kind": "reached", "note": "x"}, "unknown field(s) ['note']; known: ['kind', 'amount"),
        ({"kind": "promise_to_pay", "amount_cents": 100}, "promise_to_pay needs a date (the p"),
        ({"kind": "promise_to_pay", "date": "2099-01-15"}, "promise_to_pay needs amount_cents"),
        (
            {"kind": "promise_to_pay", "amount_cents": "100", "date": "2099-01-15"},
            "amount_cents must be an integer, got '100'",
        ),
        ({"kind": "follow_up"}, "follow_up needs a date (the follow-up date)"),
        ({"kind": "follow_up", "date": "15/01/2099"}, "date must be YYYY-MM-DD, got '15/01/2099'"),
        ({"kind": "follow_up", "date": "2099-02-30"}, "date must be YYYY-MM-DD, got '2099-02-30'"),
        ({"kind": "follow_up", "date": 20990115}, "date must be YYYY-MM-DD, got 20990115"),
        ({"kind": "follow_up", "date": "2000-01-01"}, "date 2000-01-01 is before the call"),
        ({"kind": "reached", "date": "2099-01-15"}, "date is only for promise_to_pay and follow"),
        ({"kind": "dispute", "text": "a\x00b"}, "text contains control characters"),
    ],
)
def test_invalid_outcomes_are_422_with_a_reason(
    sqlite_world: World, body: dict[str, Any], reason: str
) -> None:
    call = _call(sqlite_world, "10042")
    response = sqlite_world.request("POST", f"/api/calls/{call}/outcome", "collector", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["reason"].startswith(reason), response.json()


def test_outcome_body_must_be_json_and_the_call_on_an_account(sqlite_world: World) -> None:
    call = _call(sqlite_world, "10042")
    form = sqlite_world.request(
        "POST", f"/api/calls/{call}/outcome", "collector", content=b"kind=reached"
    )
    assert form.status_code == 415
    orphan = _call(sqlite_world, None)
    for who in ("collector", "admin"):  # a collector cannot see it; others are told why
        response = sqlite_world.request(
            "POST", f"/api/calls/{orphan}/outcome", who, json={"kind": "reached"}
        )
        assert response.status_code == (404 if who == "collector" else 422)
    assert "is not on an account" in response.json()["reason"]


# -- follow-ups ---------------------------------------------------------------------------


def test_followups_due_by_role(world: World) -> None:
    _set_clock(world)  # today: 2026-11-03
    dana, marcus = _collector_id(world, "Dana Whitfield"), _collector_id(world, "Marcus Lee")
    own, other = _call(world, "10042"), _call(world, "20001")
    promise = {"kind": "promise_to_pay", "amount_cents": 50000, "date": "2099-01-10"}
    assert world.request("POST", f"/api/calls/{own}/outcome", "collector", json=promise).is_success
    follow = {"kind": "follow_up", "date": "2099-01-12"}
    assert world.request("POST", f"/api/calls/{other}/outcome", "admin", json=follow).is_success

    def due(who: str, query: str) -> list[tuple[str, str, str]]:
        response = world.request("GET", f"/api/followups?{query}", who)
        assert response.status_code == 200, response.text
        return [(f["account"], f["kind"], f["due"]) for f in response.json()["followups"]]

    both = [("10042", "promise_to_pay", "2099-01-10"), ("20001", "follow_up", "2099-01-12")]
    assert due("supervisor", "due=2099-01-12") == both
    assert due("admin", "due=2099-01-11") == both[:1]
    assert due("supervisor", f"due=2099-01-12&collector={marcus}") == both[1:]
    assert due("collector", "due=2099-01-12") == both[:1]  # own accounts only
    assert due("collector", f"due=2099-01-12&collector={dana}") == both[:1]
    assert due("collector", f"due=2099-01-12&collector={marcus}") == []
    assert due("supervisor", "") == []  # default: due by today, and these are in 2099

    full = world.request("GET", "/api/followups?due=2099-01-12", "collector").json()
    assert full["followups"][0] | {"marked_at": None} == {
        "account": "10042",
        "customer": "Northwind Traders",
        "collector_id": dana,
        "kind": "promise_to_pay",
        "due": "2099-01-10",
        "amount_cents": 50000,
        "currency": "USD",
        "call_id": own,
        "outcome_id": full["followups"][0]["outcome_id"],
        "marked_by": "dana",
        "marked_at": None,
    }
    before = world.last_audit_id()
    due("supervisor", "due=2099-01-12")
    [row] = world.audit_since(before)
    assert (row.action, row.detail) == (
        "followups.list",
        {"due": "2099-01-12", "collector": None, "count": 2, "accounts": ["10042", "20001"]},
    )


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("due=tomorrow", "due must be YYYY-MM-DD, got 'tomorrow'"),
        ("due=2099-13-01", "due must be YYYY-MM-DD, got '2099-13-01'"),
        ("collector=dana", "collector must be an integer"),
        ("who=1", "unknown query parameter(s) ['who']"),
        ("due=2099-01-01&due=2099-01-02", "query parameter(s) ['due'] given more than once"),
    ],
)
def test_followups_bad_queries(sqlite_world: World, query: str, reason: str) -> None:
    response = sqlite_world.request("GET", f"/api/followups?{query}", "supervisor")
    assert response.status_code == 422
    assert response.json()["reason"].startswith(reason)


# -- callable -----------------------------------------------------------------------------


def _callable(world: World, who: str, query: str = "", number: str = "10042") -> Any:
    response = world.request("GET", f"/api/accounts/{number}/callable{query}", who)
    assert response.status_code == 200, response.text
    return response.json()


def test_callable_answers_with_the_rule_and_when(world: World) -> None:
    clock = _set_clock(world)
    assert _callable(world, "collector", "?to=%2B12125550101") == {
        "account": "10042",
        "to": "+12125550101",
        "allowed": True,
        "rule": None,
        "status": None,
        "reason": None,
        "allowed_from": None,
    }
    clock.now = dt.datetime(2026, 11, 3, 21, 0, tzinfo=NEW_YORK)
    late = _callable(world, "collector", "?to=(212) 555-0101")
    assert (late["allowed"], late["rule"], late["status"]) == (False, "calling_hours", 409)
    assert late["reason"] == (
        "outside calling hours 08:00-21:00 America/New_York (now 21:00 there); "
        "allowed from 2026-11-04 08:00 America/New_York"
    )
    assert late["allowed_from"] == "2026-11-04T13:00:00+00:00"
    before = world.last_audit_id()
    abroad = _callable(world, "supervisor", "?to=%2B442071234567")
    assert (abroad["rule"], abroad["status"]) == ("destination_not_allowed", 403)
    [row] = world.audit_since(before)
    assert (row.action, row.target_id, row.detail) == (
        "account.callable",
        "10042",
        {"to": "+442071234567", "allowed": False, "rule": "destination_not_allowed"},
    )


def test_callable_counts_attempts_and_conversations(world: World) -> None:
    clock = _set_clock(world)
    started = dt.datetime(2026, 11, 3, 9, 0, tzinfo=NEW_YORK)
    for n in range(7):
        _call(world, "20001", started_at=started - dt.timedelta(days=n % 3, minutes=n))
    _call(world, "20001", "inbound", started_at=started)
    assert _callable(world, "admin", number="20001")["rule"] == "attempt_limit"
    talked = _call(world, "10042", started_at=started)
    assert _callable(world, "collector")["allowed"] is True
    marked = world.request(
        "POST", f"/api/calls/{talked}/outcome", "collector", json={"kind": "reached"}
    )
    assert marked.status_code == 201
    answer = _callable(world, "collector")
    assert (answer["rule"], answer["allowed_from"]) == (
        "recent_conversation",
        "2026-11-10T13:00:00+00:00",
    )
    clock.now = dt.datetime(2026, 11, 10, 8, 0, tzinfo=NEW_YORK)
    assert _callable(world, "collector")["allowed"] is True


def test_callable_refusals(sqlite_world: World) -> None:
    _set_clock(sqlite_world)
    # An unencoded "+" arrives as a space and is read back as "+".
    assert _callable(sqlite_world, "admin", "?to=+442071234567")["to"] == "+442071234567"
    bad = sqlite_world.request("GET", "/api/accounts/10042/callable?to=12", "admin")
    assert bad.status_code == 422
    assert bad.json()["reason"].startswith("to: invalid phone '12'")
    other = sqlite_world.request("GET", "/api/accounts/20001/callable", "collector")
    assert other.status_code == 404
    unknown = sqlite_world.request("GET", "/api/accounts/99999/callable", "admin")
    assert unknown.status_code == 404
    assert (
        sqlite_world.request("GET", "/api/accounts/10042/callable?x=1", "admin").status_code == 422
    )


def test_openapi_documents_the_new_operations(sqlite_world: World) -> None:
    paths = sqlite_world.request("GET", "/api/openapi.json", "anonymous").json()["paths"]
    mark = paths["/api/calls/{call_id}/outcome"]["post"]
    assert mark["x-roles"] == ["admin", "collector", "supervisor"]
    assert mark["requestBody"]["content"]["application/json"]["schema"]["required"] == ["kind"]
    assert "201" in mark["responses"]
    assert [p["name"] for p in paths["/api/followups"]["get"]["parameters"]] == ["due", "collector"]
    callable_ = paths["/api/accounts/{number}/callable"]["get"]
    assert [p["name"] for p in callable_["parameters"]] == ["number", "to"]
