"""Call outcomes on SQLite and PostgreSQL: validation, the note and webhook each marking files,
corrections, the follow-ups due; and the softphone DTMF codes (pure)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accounts.db import create_schema, make_engine, make_sessions
from accounts.models import Account, Call, CallOutcome, Collector, Customer, Note, WebhookOutbox
from accounts.outcomes import (
    FollowUp,
    Marking,
    OutcomeError,
    follow_ups_due,
    latest_outcome,
    mark_outcome,
    money,
    note_text,
    parse_dtmf_outcome,
)
from accounts.services import UnknownCall

NOV = dt.date(2026, 11, 1)
CHICAGO = ZoneInfo("America/Chicago")


def day(n: int) -> dt.date:
    return NOV + dt.timedelta(days=n - 1)


# -- markings (pure) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "paid"}, "kind must be one of reached, no_answer, left_message, "),
        ({"kind": "promise_to_pay", "date": NOV}, "promise_to_pay needs amount_cents"),
        ({"kind": "promise_to_pay", "amount_cents": 100}, "promise_to_pay needs a date (the pro"),
        ({"kind": "promise_to_pay", "amount_cents": 0, "date": NOV}, "amount_cents must be from"),
        ({"kind": "promise_to_pay", "amount_cents": True, "date": NOV}, "amount_cents must be an"),
        ({"kind": "promise_to_pay", "amount_cents": 1.5, "date": NOV}, "amount_cents must be an"),
        ({"kind": "promise_to_pay", "amount_cents": 10**15, "date": NOV}, "amount_cents must be"),
        ({"kind": "follow_up"}, "follow_up needs a date (the follow-up date)"),
        ({"kind": "follow_up", "date": "2026-11-01"}, "date must be a date, got '2026-11-01'"),
        ({"kind": "follow_up", "date": NOV, "amount_cents": 5}, "amount_cents is only for prom"),
        ({"kind": "reached", "amount_cents": 5}, "amount_cents is only for promise_to_pay, not r"),
        ({"kind": "no_answer", "date": NOV}, "date is only for promise_to_pay and follow_up, not"),
        ({"kind": "dispute", "text": "x" * 2001}, "text longer than 2000 characters"),
        ({"kind": "dispute", "text": "bad\x00byte"}, "text contains control characters"),
        ({"kind": "dispute", "text": 5}, "text must be a string, got 5"),
    ],
)
def test_marking_refuses_inconsistent_fields(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(OutcomeError) as err:
        Marking(**fields)
    assert str(err.value).startswith(message), str(err.value)


def test_marking_accepts() -> None:
    assert Marking("dispute", text="Says invoice F-2001 was never delivered.\n\tCheck POD.").text
    assert Marking("reached", text="   ").text is None  # an empty form field
    assert Marking("promise_to_pay", amount_cents=125000, date=NOV).amount_cents == 125000
    assert Marking("follow_up", date=NOV).date == NOV


# -- DTMF codes (pure) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "marking"),
    [
        ("*1#", Marking("reached")),
        ("*2#", Marking("no_answer")),
        ("*3#", Marking("left_message")),
        ("*4#", Marking("dispute")),
        ("*520261120#", Marking("follow_up", date=dt.date(2026, 11, 20))),
        ("*520280229#", Marking("follow_up", date=dt.date(2028, 2, 29))),
        (
            "*6125000*20261120#",
            Marking("promise_to_pay", amount_cents=125000, date=dt.date(2026, 11, 20)),
        ),
        ("*61*20261120#", Marking("promise_to_pay", amount_cents=1, date=dt.date(2026, 11, 20))),
    ],
)
def test_dtmf_codes(keys: str, marking: Marking) -> None:
    assert parse_dtmf_outcome(keys) == marking


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("", "outcome code '': expected * then a kind 1-6, its fields, then #"),
        ("*1", "outcome code '*1': expected * then a kind 1-6, its fields, then #"),
        ("1#", "outcome code '1#': expected * then a kind 1-6, its fields, then #"),
        ("*7#", "outcome code '*7#': expected * then a kind 1-6, its fields, then #"),
        ("*0#", "outcome code '*0#': expected * then a kind 1-6, its fields, then #"),
        ("*1A#", "outcome code '*1A#': expected * then a kind 1-6, its fields, then #"),
        ("*1##", "outcome code '*1##': expected * then a kind 1-6, its fields, then #"),
        ("*12#", "outcome code '*12#': *1 takes nothing before #"),
        ("*4*#", "outcome code '*4*#': *4 takes nothing before #"),
        ("*5#", "outcome code '*5#': '' is not a date YYYYMMDD"),
        ("*52026112#", "outcome code '*52026112#': '2026112' is not a date YYYYMMDD"),
        ("*520261332#", "outcome code '*520261332#': '20261332' is not a date YYYYMMDD"),
        ("*520270229#", "outcome code '*520270229#': '20270229' is not a date YYYYMMDD"),
        ("*5*20261120#", "outcome code '*5*20261120#': '*20261120' is not a date YYYYMMDD"),
        ("*6125000#", "outcome code '*6125000#': expected *6CENTS*YYYYMMDD#"),
        ("*6*20261120#", "outcome code '*6*20261120#': expected *6CENTS*YYYYMMDD#"),
        ("*60100*20261120#", "outcome code '*60100*20261120#': expected *6CENTS*YYYYMMDD#"),
        ("*6100*2026112#", "outcome code '*6100*2026112#': '2026112' is not a date YYYYMMDD"),
        ("*6100*20261120*1#", "outcome code '*6100*20261120*1#': '20261120*1' is not a date"),
    ],
)
def test_dtmf_code_errors(keys: str, message: str) -> None:
    with pytest.raises(OutcomeError) as err:
        parse_dtmf_outcome(keys)
    assert str(err.value).startswith(message), str(err.value)


def test_note_text_and_money() -> None:
    promise = Marking("promise_to_pay", amount_cents=125000, date=day(20), text="Via ACH.")
    assert note_text(7, promise, "USD", None) == (
        "Outcome of call 7: promise to pay 1,250.00 USD by 2026-11-20.\nVia ACH."
    )
    assert note_text(7, Marking("follow_up", date=day(12)), "USD", "no_answer") == (
        "Outcome of call 7 corrected (was: no answer): follow up on 2026-11-12."
    )
    assert money(5, "EUR") == "0.05 EUR"
    assert money(123456789012, "USD") == "1,234,567,890.12 USD"
    assert money(-150, "USD") == "-1.50 USD"


# -- storage ------------------------------------------------------------------------------


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield make_sessions(engine)
    engine.dispose()


@pytest.fixture
def world(sessions: sessionmaker[Session]) -> dict[str, int]:
    """Collectors dana and marcus; accounts 100 (dana, EUR, Chicago), 200 (marcus), 300 (none)."""
    ids = {}
    with sessions.begin() as session:
        customer = Customer(name="Northwind")
        dana, marcus = Collector(name="Dana"), Collector(name="Marcus")
        session.add_all([customer, dana, marcus])
        session.flush()
        ids["dana"], ids["marcus"] = dana.id, marcus.id
        for number, collector, currency in (("100", dana, "EUR"), ("200", marcus, "USD")):
            account = Account(
                number=number,
                customer_id=customer.id,
                collector_id=collector.id,
                currency=currency,
                timezone="America/Chicago",
            )
            session.add(account)
            session.flush()
            ids[number] = account.id
        session.add(Account(number="300", customer_id=customer.id))
    return ids


def _call(sessions: sessionmaker[Session], account_id: int | None, started: dt.date = NOV) -> int:
    # 18:00 Chicago: already the next day in UTC, so the call's day must be read locally.
    at = dt.datetime(started.year, started.month, started.day, 18, 0, tzinfo=CHICAGO)
    with sessions.begin() as session:
        call = Call(
            direction="outbound",
            caller="sip:dana@pbx",
            callee="+13125550100",
            account_id=account_id,
            worker="w0",
            sip_call_id=f"c-{at.isoformat()}-{account_id}",
            status="completed",
            started_at=at,
        )
        session.add(call)
        session.flush()
        return call.id


def _mark(sessions: sessionmaker[Session], call_id: int, kind: str, **fields: Any) -> CallOutcome:
    with sessions.begin() as session:
        return mark_outcome(session, call_id, Marking(kind, **fields), user="dana")


def test_mark_stores_the_outcome_and_files_a_note_with_its_webhook(
    sessions: sessionmaker[Session], world: dict[str, int]
) -> None:
    call = _call(sessions, world["100"])
    outcome = _mark(sessions, call, "promise_to_pay", amount_cents=125000, date=day(20))
    assert (outcome.call_id, outcome.account_id, outcome.collector_id) == (
        call,
        world["100"],
        world["dana"],
    )
    assert (outcome.kind, outcome.amount_cents, outcome.currency) == (
        "promise_to_pay",
        125000,
        "EUR",
    )
    assert (outcome.promise_date, outcome.follow_up_date, outcome.user) == (day(20), None, "dana")
    with sessions() as session:
        note = session.get(Note, outcome.note_id)
        assert note is not None
        assert (note.account_id, note.call_id, note.kind, note.author) == (
            world["100"],
            call,
            "outcome",
            "dana",
        )
        assert note.body == f"Outcome of call {call}: promise to pay 1,250.00 EUR by 2026-11-20."
        queued = session.scalars(select(WebhookOutbox.note_id)).all()
        assert queued == [note.id]


def test_a_call_may_be_marked_again_and_the_latest_counts(
    sessions: sessionmaker[Session], world: dict[str, int]
) -> None:
    call = _call(sessions, world["100"])
    first = _mark(sessions, call, "no_answer")
    second = _mark(sessions, call, "reached", text="Spoke to AP.")
    with sessions() as session:
        assert _latest(session, call).id == second.id
        rows = session.scalars(select(CallOutcome).order_by(CallOutcome.id)).all()
        assert [(r.id, r.kind) for r in rows] == [(first.id, "no_answer"), (second.id, "reached")]
        note = session.get(Note, second.note_id)
        assert note is not None
        assert note.body == (
            f"Outcome of call {call} corrected (was: no answer): reached the customer.\n"
            "Spoke to AP."
        )
        assert latest_outcome(session, 999) is None


def test_mark_refusals(sessions: sessionmaker[Session], world: dict[str, int]) -> None:
    with sessions.begin() as session, pytest.raises(UnknownCall, match="no call with id 999"):
        mark_outcome(session, 999, Marking("reached"), user="dana")
    orphan = _call(sessions, None)
    with sessions.begin() as session, pytest.raises(OutcomeError, match="not on an account"):
        mark_outcome(session, orphan, Marking("reached"), user="dana")
    call = _call(sessions, world["100"], day(10))  # Nov 10, 18:00 Chicago (Nov 11 UTC)
    _mark(sessions, call, "follow_up", date=day(10))  # the call's own day is fine
    with pytest.raises(OutcomeError, match=r"date 2026-11-09 is before the call \(2026-11-10\)"):
        _mark(sessions, call, "follow_up", date=day(9))
    _mark(sessions, call, "follow_up", date=day(10) + dt.timedelta(days=366))
    with pytest.raises(OutcomeError, match="is more than 366 days away"):
        _mark(sessions, call, "follow_up", date=day(10) + dt.timedelta(days=367))
    with sessions() as session:  # the refused ones left nothing behind
        assert len(session.scalars(select(CallOutcome)).all()) == 2
        assert len(session.scalars(select(Note)).all()) == 2


def test_follow_ups_due(sessions: sessionmaker[Session], world: dict[str, int]) -> None:
    promise = _call(sessions, world["100"])
    _mark(sessions, promise, "promise_to_pay", amount_cents=50000, date=day(10))
    follow = _call(sessions, world["200"])
    _mark(sessions, follow, "follow_up", date=day(12))
    _mark(sessions, _call(sessions, world["100"]), "reached")  # talked since: promise settled
    with sessions() as session:
        assert follow_ups_due(session, day(30)) == [
            FollowUp(
                account_id=world["200"],
                account="200",
                customer="Northwind",
                collector_id=world["marcus"],
                kind="follow_up",
                due=day(12),
                amount_cents=None,
                currency=None,
                call_id=follow,
                outcome_id=_latest(session, follow).id,
                marked_by="dana",
                marked_at=_latest(session, follow).created_at,
            )
        ]
    again = _call(sessions, world["100"], day(2))  # a new promise: pending again
    _mark(sessions, again, "promise_to_pay", amount_cents=50000, date=day(10))
    with sessions() as session:
        assert _due(session, day(9)) == []
        assert _due(session, day(10)) == [("100", "promise_to_pay", day(10))]
        assert _due(session, day(12)) == [
            ("100", "promise_to_pay", day(10)),
            ("200", "follow_up", day(12)),
        ]
        assert _due(session, day(12), world["marcus"]) == [("200", "follow_up", day(12))]
        assert _due(session, day(12), world["dana"]) == [("100", "promise_to_pay", day(10))]
        assert _due(session, day(12), 999) == []


def test_what_keeps_a_follow_up_pending(
    sessions: sessionmaker[Session], world: dict[str, int]
) -> None:
    first = _call(sessions, world["100"])
    _mark(sessions, first, "follow_up", date=day(5))
    _mark(sessions, _call(sessions, world["100"], day(5)), "no_answer")
    _mark(sessions, _call(sessions, world["100"], day(5)), "left_message")
    with sessions() as session:  # nobody reached: still due
        assert _due(session, day(5)) == [("100", "follow_up", day(5))]
    newer = _call(sessions, world["100"], day(5))
    _mark(sessions, newer, "promise_to_pay", amount_cents=100, date=day(8))
    with sessions() as session:  # a newer promise replaces the follow-up
        assert _due(session, day(5)) == []
        assert _due(session, day(8)) == [("100", "promise_to_pay", day(8))]
    _mark(sessions, newer, "no_answer")  # corrected: the promise was never made
    with sessions() as session:
        assert _due(session, day(8)) == [("100", "follow_up", day(5))]
    _mark(sessions, _call(sessions, world["100"], day(6)), "dispute")
    with sessions() as session:  # talked to them since: settled
        assert _due(session, day(30)) == []


def _latest(session: Session, call_id: int) -> CallOutcome:
    outcome = latest_outcome(session, call_id)
    assert outcome is not None
    return outcome


def _due(
    session: Session, on_or_before: dt.date, collector_id: int | None = None
) -> list[tuple[str, str, dt.date]]:
    return [(f.account, f.kind, f.due) for f in follow_ups_due(session, on_or_before, collector_id)]
