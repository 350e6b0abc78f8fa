"""The worklist order (accounts/worklist.py): the pure `order`, and `standings` read from
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from accounts.db import create_schema, make_engine, make_sessions
from accounts.demo import load_demo_if_empty
from accounts.models import Account, Call, Collector, Invoice
from accounts.outcomes import FollowUp, Marking, mark_outcome
from accounts.worklist import FOLLOW_UP, PROMISE, REST, Standing, last_contacts, order, standings

TODAY = dt.date(2026, 12, 3)
AT = dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC)


def _pending(kind: str, due: dt.date, amount: int | None = None) -> FollowUp:
    return FollowUp(1, "x", "c", 1, kind, due, amount, "USD", 1, 1, "dana", AT)


def _s(
    number: str, past_due: int = 0, weight: int = 0, pending: FollowUp | None = None
) -> Standing:
    return Standing(1, number, "c", "USD", past_due, weight, None, pending)


def test_promises_then_follow_ups_then_weighted_past_due() -> None:
    rest_heavy = _s("A1", past_due=100_000, weight=100_000 * 60)
    rest_light = _s("A2", past_due=150_000, weight=150_000 * 10)
    nothing = _s("A0")
    follow = _s("F1", pending=_pending("follow_up", TODAY))
    promise = _s("P1", pending=_pending("promise_to_pay", TODAY, 5_000))
    got = order([nothing, rest_light, follow, rest_heavy, promise])
    assert [s.number for s in got] == ["P1", "F1", "A1", "A2", "A0"]
    assert [s.group for s in got] == [PROMISE, FOLLOW_UP, REST, REST, REST]


def test_broken_promises_longest_overdue_first_then_larger() -> None:
    old = _s("B", pending=_pending("promise_to_pay", TODAY - dt.timedelta(days=9), 100))
    big = _s("C", pending=_pending("promise_to_pay", TODAY, 90_000))
    small = _s("A", pending=_pending("promise_to_pay", TODAY, 100))
    assert [s.number for s in order([small, big, old])] == ["B", "C", "A"]


def test_follow_ups_soonest_due_first() -> None:
    later = _s("A", pending=_pending("follow_up", TODAY))
    earlier = _s("B", pending=_pending("follow_up", TODAY - dt.timedelta(days=2)))
    assert [s.number for s in order([later, earlier])] == ["B", "A"]


def test_ties_go_by_account_number_and_order_is_stable() -> None:
    same = [_s(n, past_due=500, weight=5000) for n in ("30", "10", "20")]
    assert [s.number for s in order(same)] == ["10", "20", "30"]
    assert order(order(same)) == order(same)


def test_weight_beats_amount_and_amount_breaks_weight_ties() -> None:
    a = _s("A", past_due=100, weight=9000)
    b = _s("B", past_due=900, weight=9000)
    c = _s("C", past_due=10_000, weight=8999)
    assert [s.number for s in order([a, b, c])] == ["B", "A", "C"]


# -- read from the database ---------------------------------------------------------------


@pytest.fixture
def sessions(database_url: str) -> Iterator[object]:
    engine = make_engine(database_url)
    create_schema(engine)
    made = make_sessions(engine)
    load_demo_if_empty(made)
    yield made
    engine.dispose()


def _ids(session: object, *numbers: str) -> dict[str, int]:
    stmt = select(Account.number, Account.id).where(Account.number.in_(numbers))
    return dict(session.execute(stmt).all())  # type: ignore[attr-defined]


def _outbound(session: object, account_id: int) -> int:
    call = Call(
        direction="outbound",
        caller="sip:dana@pbx",
        callee="+12125550102",
        account_id=account_id,
        worker="w0",
        sip_call_id=f"w-{account_id}",
        status="completed",
        started_at=AT,
    )
    session.add(call)  # type: ignore[attr-defined]
    session.flush()  # type: ignore[attr-defined]
    return call.id


def test_standings_from_the_demo_portfolio(sessions: object) -> None:
    today = dt.date.today()  # the demo's dates are relative to the day it was loaded
    with sessions.begin() as session:  # type: ignore[attr-defined]
        ids = _ids(session, "20001", "20002", "10042", "30003")
        promise = _outbound(session, ids["20002"])
        mark_outcome(session, promise, Marking("promise_to_pay", 32000, today), user="marcus")
        follow = _outbound(session, ids["20001"])
        mark_outcome(session, follow, Marking("follow_up", None, today), user="marcus")
    with sessions() as session:  # type: ignore[attr-defined]
        got = {s.number: s for s in standings(session, None, today)}
        dana = session.scalar(select(Collector.id).where(Collector.name == "Dana Whitfield"))
        mine = [s.number for s in standings(session, dana, today)]
        last = last_contacts(session, [ids["20002"], ids["10042"]])
    assert mine == ["10042"]
    # past due as the IVR reads it: open amounts of invoices due before today
    assert got["10042"].past_due_cents == 125000
    assert got["10042"].weight == 125000 * 60
    assert got["30003"].weight == 425000 * 170
    assert got["20002"].past_due_cents == 0 and got["20002"].weight == 0
    assert got["10042"].oldest_due == today - dt.timedelta(days=60)
    assert got["20002"].oldest_due == today + dt.timedelta(days=20)
    assert got["20002"].pending is not None and got["20002"].pending.kind == "promise_to_pay"
    assert [s.number for s in order(got.values())] == ["20002", "20001", "30003", "10042"]
    assert last[ids["20002"]].outcome == "promise_to_pay"
    assert ids["10042"] not in last  # never called


def test_paid_invoices_weigh_nothing(sessions: object) -> None:
    today = dt.date.today()
    with sessions.begin() as session:  # type: ignore[attr-defined]
        ids = _ids(session, "10042")
        for invoice in session.scalars(select(Invoice).where(Invoice.account_id == ids["10042"])):
            invoice.open_cents = 0
    with sessions() as session:  # type: ignore[attr-defined]
        [s] = [s for s in standings(session, None, today) if s.number == "10042"]
    assert (s.past_due_cents, s.weight, s.oldest_due) == (0, 0, None)


def test_a_generated_portfolio_next_to_the_demo_data(sessions: object) -> None:
    from accounts.models import Contact, Customer, Note
    from accounts.portfolio import COLLECTORS, PortfolioError, fill, phone

    engine = sessions.kw["bind"]  # type: ignore[attr-defined]
    notes = fill(engine, 120)
    with sessions() as session:  # type: ignore[attr-defined]
        count = {
            t.__tablename__: session.scalar(select(func.count()).select_from(t))
            for t in (Account, Customer, Note, Collector)
        }
        seventh = session.scalar(select(Collector.id).where(Collector.name == "Collector 07"))
        mine = standings(session, seventh, dt.date.today())
        numbers = set(session.scalars(select(Contact.phone_e164)))
    assert count == {"accounts": 4 + 120, "customers": 3 + 120, "notes": notes,
                     "collectors": 2 + COLLECTORS}  # fmt: skip
    assert 5 * 120 <= notes <= 15 * 120
    assert len(mine) == 120 // COLLECTORS + (1 if 120 % COLLECTORS > 7 else 0)
    assert any(s.weight > 0 for s in order(mine))
    assert all("55501" in n for n in numbers if n not in ("+12125550101", "+12125550102",
                                                          "+12125550103"))  # fmt: skip
    assert phone(0) == "+120055501" + "00"
    with pytest.raises(PortfolioError):
        fill(engine, 1)
