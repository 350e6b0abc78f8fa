"""Make a Call over HTTP: what reaches the fleet, every refusal with its reason and audit row,
and a call's status. The fleet is a fake here; tests/integration proves the worker's side."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from accounts.call_journal import CallJournal
from accounts.models import (
    Account,
    AuditEntry,
    Call,
    CallEvent,
    Collector,
    Contact,
    Note,
    Softphone,
)
from tests.unit.apiworld import World, dana_dialable, make_world

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(f"sqlite:///{tmp_path_factory.mktemp('dialout') / 'voice.db'}")
    w.api_state.clock = lambda: dt.datetime(2026, 11, 4, 10, 0, tzinfo=NEW_YORK)
    dana_dialable(w.sessions)
    yield w
    w.engine.dispose()


def audit_actions(world: World, after: int) -> list[tuple[str, dict[str, object]]]:
    return [(r.action, r.detail) for r in world.audit_since(after)]


def test_rings_the_collector_then_the_account_contact(world: World) -> None:
    before = world.last_audit_id()
    response = world.request("POST", "/api/calls", "collector", json={"account": "10042"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["call_id"] == 901 and body["status_url"] == "/api/calls/901"
    # Dana's phone rings first (the worker picks softphone or SIP URI); then the first contact.
    [placed] = world.fleet.placed
    assert isinstance(placed.pop("attempt"), int)  # reserved: tests/unit/test_guardrail_race.py
    assert placed == {
        "collector": _dana(world),
        "customer": "+12125550101",
        "account_id": _account_id(world, "10042"),
        "user": "dana",
        "caller_id": "",
    }
    assert audit_actions(world, before) == [("call.place", {"to": "+12125550101"})]


def test_a_collector_without_a_reachable_phone_is_told_so(world: World) -> None:
    with world.sessions.begin() as session:
        dana = session.scalar(select(Collector).where(Collector.name == "Dana Whitfield"))
        dana.sip_uri = "sip:dana@collections.example"  # a reserved domain: never dialled
    response = world.request("POST", "/api/calls", "collector", json={"account": "10042"})
    assert response.status_code == 422
    assert response.json()["reason"] == "no softphone and no reachable SIP URI for this collector"
    with world.sessions.begin() as session:
        session.add(Softphone(username="dana", realm="r", ha1="0" * 32, ha1b="0" * 32,
                              collector_id=_dana(world)))  # fmt: skip
    response = world.request(
        "POST", "/api/calls", "collector", json={"account": "10042", "to": "(212) 555-0101"}
    )
    assert response.status_code == 202, response.text
    assert world.fleet.placed[0]["customer"] == "+12125550101"


def test_only_the_accounts_own_numbers_are_dialled(world: World) -> None:
    response = world.request(
        "POST", "/api/calls", "collector", json={"account": "10042", "to": "+19005550100"}
    )
    assert response.status_code == 422
    assert "not a contact number of account 10042" in response.json()["reason"]
    assert world.fleet.placed == []


def test_another_collectors_account_is_not_found_and_audited(world: World) -> None:
    before = world.last_audit_id()
    response = world.request("POST", "/api/calls", "collector", json={"account": "20001"})
    assert response.status_code == 404
    assert [a for a, _ in audit_actions(world, before)] == ["access.denied"]
    assert world.fleet.placed == []


def test_outside_calling_hours_is_refused_with_the_rule_and_when(world: World) -> None:
    world.api_state.clock = lambda: dt.datetime(2026, 11, 4, 21, 0, tzinfo=NEW_YORK)
    before = world.last_audit_id()
    response = world.request("POST", "/api/calls", "collector", json={"account": "10042"})
    assert response.status_code == 409
    body = response.json()
    assert body["rule"] == "calling_hours"
    assert "08:00" in body["reason"] and "21:00" in body["reason"]
    assert body["allowed_from"] == "2026-11-05T13:00:00+00:00"  # 08:00 in New York
    [(action, detail)] = audit_actions(world, before)
    assert action == "call.refused" and detail["rule"] == "calling_hours"
    assert world.fleet.placed == []
    # A minute earlier it goes through.
    world.api_state.clock = lambda: dt.datetime(2026, 11, 4, 20, 59, tzinfo=NEW_YORK)
    assert (
        world.request("POST", "/api/calls", "collector", json={"account": "10042"}).status_code
        == 202
    )


def test_the_eighth_attempt_in_a_week_is_refused(world: World) -> None:
    journal = CallJournal(world.sessions)
    account_id = _account_id(world, "10042")
    for _ in range(7):
        call_id = journal.start_call(direction="outbound", caller="dana", callee="+12125550101",
                                     worker="w1", sip_call_id="x")  # fmt: skip
        journal.set_account(call_id, account_id)
        with world.sessions.begin() as session:  # calls of this week, as the clock sees it
            session.get(Call, call_id).started_at = dt.datetime(2026, 11, 3, 15, 0, tzinfo=dt.UTC)
    response = world.request("POST", "/api/calls", "collector", json={"account": "10042"})
    assert response.status_code == 409
    assert response.json()["rule"] == "attempt_limit"
    assert world.fleet.placed == []


def test_a_destination_outside_the_allow_list_is_forbidden(world: World) -> None:
    with world.sessions.begin() as session:
        session.add(Contact(account_id=_account_id(world, "10042"), phone_e164="+442071234567"))
    response = world.request(
        "POST", "/api/calls", "collector", json={"account": "10042", "to": "+44 20 7123 4567"}
    )
    assert response.status_code == 403
    assert response.json()["rule"] == "destination_not_allowed"
    assert world.fleet.placed == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "account: expected an account number"),
        ({"account": "10042", "to": 5}, "to: expected a phone number"),
        ({"account": "10042", "from": "+1"}, "unknown field(s): from"),
    ],
)
def test_bad_requests_say_what_is_wrong(world: World, body: dict[str, object], reason: str) -> None:
    response = world.request("POST", "/api/calls", "collector", json=body)
    assert response.status_code == 422
    assert response.json()["reason"] == reason


def test_status_shows_progress_events(world: World) -> None:
    journal = CallJournal(world.sessions)
    call_id = journal.start_call(direction="outbound", caller="dana", callee="+12125550101",
                                 worker="w1", sip_call_id="x")  # fmt: skip
    journal.set_account(call_id, _account_id(world, "10042"))
    journal.add_event(call_id, "ringing_collector", {"to": "sip:dana@collections.example"})
    journal.add_event(call_id, "bridged", {})
    response = world.request("GET", f"/api/calls/{call_id}", "collector")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["direction"], body["account"]) == (
        "in_progress",
        "outbound",
        "10042",
    )
    assert [e["kind"] for e in body["events"]] == ["ringing_collector", "bridged"]
    assert body["events"][0]["to"] == "sip:dana@collections.example"
    with world.sessions() as session:
        assert session.scalar(select(CallEvent.id).where(CallEvent.call_id == call_id))
        assert (
            session.scalar(select(AuditEntry.action).order_by(AuditEntry.id.desc())) == "call.read"
        )


def _dana(world: World) -> int:
    with world.sessions() as session:
        return session.scalar(select(Collector.id).where(Collector.name == "Dana Whitfield"))


def _account_id(world: World, number: str) -> int:
    with world.sessions() as session:
        return session.scalar(select(Account.id).where(Account.number == number))


def test_voicemails_are_listed_for_their_collector(world: World) -> None:
    with world.sessions.begin() as session:
        own, other = (
            session.scalar(select(Account.id).where(Account.number == n))
            for n in ("10042", "20001")
        )
        for account_id, body in ((own, "Voicemail for Dana"), (other, "Voicemail for Marcus")):
            session.add(
                Note(account_id=account_id, author="voicemail", kind="voicemail", body=body)
            )
        session.add(Note(account_id=own, author="dana", kind="manual", body="not a voicemail"))
    mine = world.request("GET", "/api/voicemails", "collector").json()["voicemails"]
    assert [(v["account"], v["body"]) for v in mine] == [("10042", "Voicemail for Dana")]
    every = world.request("GET", "/api/voicemails", "supervisor").json()["voicemails"]
    assert [v["account"] for v in every] == ["20001", "10042"]  # newest first
