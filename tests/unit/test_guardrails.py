"""Outbound guardrails on SQLite and PostgreSQL: each rule refusing and allowing at its edges,
with a fixed clock (never the wall clock), DST included; the config keys that drive them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, event, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from accounts.audit import entries
from accounts.db import create_schema, make_engine, make_sessions
from accounts.guardrails import (
    REFUSED,
    Guardrails,
    Refusal,
    check_destination,
    destination_allowed,
    record_refusal,
)
from accounts.models import CALLS_BY_ACCOUNT, Account, Call, CallOutcome, Customer
from accounts.outcomes import Marking, mark_outcome
from accounts.services import UnknownAccount
from voice.config import ConfigError, GuardrailsConfig, from_mapping

CHICAGO = ZoneInfo("America/Chicago")
TO = "+13125550100"
CFG = GuardrailsConfig()


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 3, 12, 0, tzinfo=CHICAGO)

    def __call__(self) -> dt.datetime:
        return self.now

    def at(self, *local: int) -> None:
        self.now = dt.datetime(*local, tzinfo=CHICAGO).astimezone(dt.UTC)  # type: ignore[misc]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessions(engine)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def account_id(sessions: sessionmaker[Session]) -> int:
    return _account(sessions, "A-1")


def _account(sessions: sessionmaker[Session], number: str, tz: str = "America/Chicago") -> int:
    with sessions.begin() as session:
        customer = Customer(name=f"Customer {number}")
        session.add(customer)
        session.flush()
        account = Account(number=number, customer_id=customer.id, timezone=tz)
        session.add(account)
        session.flush()
        return account.id


def _call(sessions: sessionmaker[Session], account_id: int, direction: str, *local: int) -> int:
    started = dt.datetime(*local, tzinfo=CHICAGO)  # type: ignore[misc]
    with sessions.begin() as session:
        call = Call(
            direction=direction,
            caller="+13125550100" if direction == "inbound" else "sip:dana@pbx",
            callee="ivr" if direction == "inbound" else TO,
            account_id=account_id,
            worker="w0",
            sip_call_id=f"{direction}-{started.isoformat()}",
            status="completed",
            started_at=started,
        )
        session.add(call)
        session.flush()
        return call.id


def _mark(sessions: sessionmaker[Session], call_id: int, kind: str, **fields: Any) -> None:
    with sessions.begin() as session:
        mark_outcome(session, call_id, Marking(kind, **fields), user="dana")


def _guard(sessions: sessionmaker[Session], clock: Clock, **cfg: Any) -> Guardrails:
    return Guardrails(dataclasses.replace(CFG, **cfg), sessions, clock)


# -- calling hours ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "minute", "allowed"),
    [(7, 59, False), (8, 0, True), (12, 0, True), (20, 59, True), (21, 0, False), (0, 0, False)],
)
def test_calling_hours_in_the_customers_time_zone(
    sessions: sessionmaker[Session],
    clock: Clock,
    account_id: int,
    hour: int,
    minute: int,
    allowed: bool,
) -> None:
    clock.at(2026, 11, 3, hour, minute)
    refusal = _guard(sessions, clock).check(account_id, TO)
    if allowed:
        assert refusal is None
    else:
        assert refusal is not None
        assert (refusal.rule, refusal.status) == ("calling_hours", 409)


def test_calling_hours_reason_names_the_rule_and_when(
    sessions: sessionmaker[Session], clock: Clock, account_id: int
) -> None:
    clock.at(2026, 11, 3, 21, 14)
    assert _guard(sessions, clock).check(account_id, TO) == Refusal(
        "calling_hours",
        409,
        "outside calling hours 08:00-21:00 America/Chicago (now 21:14 there); "
        "allowed from 2026-11-04 08:00 America/Chicago",
        dt.datetime(2026, 11, 4, 14, 0, tzinfo=dt.UTC),
    )
    clock.at(2026, 11, 3, 6, 30)  # before opening: allowed later the same day
    refusal = _guard(sessions, clock).check(account_id, TO)
    assert refusal is not None
    assert refusal.allowed_from == dt.datetime(2026, 11, 3, 14, 0, tzinfo=dt.UTC)


def test_calling_hours_follow_the_account_not_the_server(
    sessions: sessionmaker[Session], clock: Clock
) -> None:
    la = _account(sessions, "LA-1", "America/Los_Angeles")
    ny = _account(sessions, "NY-1", "America/New_York")
    clock.now = dt.datetime(2026, 11, 3, 13, 30, tzinfo=dt.UTC)  # 05:30 LA, 08:30 NY
    guard = _guard(sessions, clock)
    refusal = guard.check(la, TO)
    assert refusal is not None and "(now 05:30 there)" in refusal.reason
    assert guard.check(ny, TO) is None


def test_calling_hours_across_daylight_saving_changes(
    sessions: sessionmaker[Session], clock: Clock, account_id: int
) -> None:
    guard = _guard(sessions, clock)
    # 2026-03-08: Chicago springs forward to UTC-5. 13:00 UTC is 08:00 CDT that day (a fixed
    # UTC-6 would say 07:00), while the day before it is 07:00 CST.
    clock.now = dt.datetime(2026, 3, 8, 13, 0, tzinfo=dt.UTC)
    assert guard.check(account_id, TO) is None
    clock.now = dt.datetime(2026, 3, 7, 13, 0, tzinfo=dt.UTC)
    refusal = guard.check(account_id, TO)
    assert refusal is not None and "(now 07:00 there)" in refusal.reason
    assert refusal.allowed_from == dt.datetime(2026, 3, 7, 14, 0, tzinfo=dt.UTC)
    # 2026-11-01: back to UTC-6. 02:00 UTC is 21:00 CDT on Oct 31: refused, and the next
    # opening is 08:00 CST, 14:00 UTC (not 13:00).
    clock.now = dt.datetime(2026, 11, 1, 1, 59, tzinfo=dt.UTC)
    assert guard.check(account_id, TO) is None
    clock.now = dt.datetime(2026, 11, 1, 2, 0, tzinfo=dt.UTC)
    refusal = guard.check(account_id, TO)
    assert refusal is not None
    assert refusal.allowed_from == dt.datetime(2026, 11, 1, 14, 0, tzinfo=dt.UTC)
    assert "allowed from 2026-11-01 08:00 America/Chicago" in refusal.reason


def test_unknown_time_zone_is_refused(sessions: sessionmaker[Session], clock: Clock) -> None:
    account = _account(sessions, "X-1", "Mars/Olympus_Mons")
    refusal = _guard(sessions, clock).check(account, TO)
    assert refusal == Refusal(
        "calling_hours",
        409,
        "account X-1 has an unknown time zone 'Mars/Olympus_Mons': "
        "its calling hours cannot be checked",
    )


def test_configured_hours(sessions: sessionmaker[Session], clock: Clock, account_id: int) -> None:
    guard = _guard(sessions, clock, calling_hours_start="09:30", calling_hours_end="17:00")
    clock.at(2026, 11, 3, 9, 29)
    assert guard.check(account_id, TO) is not None
    clock.at(2026, 11, 3, 9, 30)
    assert guard.check(account_id, TO) is None
    clock.at(2026, 11, 3, 17, 0)
    refusal = guard.check(account_id, TO)
    assert refusal is not None and refusal.reason.startswith("outside calling hours 09:30-17:00")


# -- attempts -----------------------------------------------------------------------------


def test_seventh_attempt_allowed_eighth_refused(
    sessions: sessionmaker[Session], clock: Clock, account_id: int
) -> None:
    clock.at(2026, 11, 10, 12, 0)  # the window is Nov 4..10, Chicago days
    for day in range(5, 11):  # 6 attempts inside
        _call(sessions, account_id, "outbound", 2026, 11, day, 9, 0)
    _call(sessions, account_id, "outbound", 2026, 11, 3, 23, 30)  # the day before the window
    for day in range(4, 11):  # inbound calls never count
        _call(sessions, account_id, "inbound", 2026, 11, day, 10, 0)
    other = _account(sessions, "B-2")
    for day in range(4, 11):  # nor do another account's
        _call(sessions, other, "outbound", 2026, 11, day, 10, 0)
    guard = _guard(sessions, clock)
    assert guard.check(account_id, TO) is None  # this would be the 7th

    _call(sessions, account_id, "outbound", 2026, 11, 4, 0, 30)  # first local day of the window
    assert guard.check(account_id, TO) == Refusal(
        "attempt_limit",
        409,
        "attempt limit: 7 outbound calls to account A-1 since 2026-11-04 "
        "(at most 7 in 7 days); allowed from 2026-11-11 08:00 America/Chicago",
        dt.datetime(2026, 11, 11, 14, 0, tzinfo=dt.UTC),
    )
    clock.at(2026, 11, 10, 23, 59)  # still refused (and outside hours: hours win)
    refusal = guard.check(account_id, TO)
    assert refusal is not None and refusal.rule == "calling_hours"
    clock.at(2026, 11, 11, 8, 0)  # the Nov 4 call has left the window
    assert guard.check(account_id, TO) is None


def test_attempt_limit_is_configurable(
    sessions: sessionmaker[Session], clock: Clock, account_id: int
) -> None:
    clock.at(2026, 11, 10, 12, 0)
    _call(sessions, account_id, "outbound", 2026, 11, 9, 9, 0)
    _call(sessions, account_id, "outbound", 2026, 11, 10, 9, 0)
    assert _guard(sessions, clock, max_attempts=3).check(account_id, TO) is None
    refusal = _guard(sessions, clock, max_attempts=2).check(account_id, TO)
    assert refusal is not None and refusal.rule == "attempt_limit"
    # A one-day window holds only today's call.
    assert (
        _guard(sessions, clock, max_attempts=2, attempt_window_days=1).check(account_id, TO) is None
    )


# -- conversations ------------------------------------------------------------------------


def test_no_calls_for_seven_days_after_a_conversation(
    sessions: sessionmaker[Session], clock: Clock, account_id: int
) -> None:
    call = _call(sessions, account_id, "outbound", 2026, 11, 2, 14, 0)  # day 1 of 7
    _mark(sessions, call, "reached")
    guard = _guard(sessions, clock)
    clock.at(2026, 11, 3, 9, 0)
    refused = guard.check(account_id, TO)
    assert refused == Refusal(
        "recent_conversation",
        409,
        f"recent conversation: call {call} on 2026-11-02 reached account A-1; "
        "no calls for 7 days after a conversation; allowed from 2026-11-09 08:00 America/Chicago",
        dt.datetime(2026, 11, 9, 14, 0, tzinfo=dt.UTC),
    )
    clock.at(2026, 11, 8, 20, 59)  # 6 days after: the last quiet day
    refusal = guard.check(account_id, TO)
    assert refusal is not None and refusal.rule == "recent_conversation"
    clock.at(2026, 11, 9, 8, 0)  # 7 days after: the period is over
    assert guard.check(account_id, TO) is None
    clock.at(2026, 11, 10, 8, 0)  # 8 days after
    assert guard.check(account_id, TO) is None


@pytest.mark.parametrize("kind", ["promise_to_pay", "dispute", "follow_up"])
def test_every_right_party_outcome_is_a_conversation(
    sessions: sessionmaker[Session], clock: Clock, account_id: int, kind: str
) -> None:
    call = _call(sessions, account_id, "outbound", 2026, 11, 2, 14, 0)
    fields: dict[str, Any] = {}
    if kind in ("promise_to_pay", "follow_up"):
        fields["date"] = dt.date(2026, 11, 20)
    if kind == "promise_to_pay":
        fields["amount_cents"] = 50000
    _mark(sessions, call, kind, **fields)
    refusal = _guard(sessions, clock).check(account_id, TO)
    assert refusal is not None and refusal.rule == "recent_conversation"


def test_what_is_not_a_conversation(
    sessions: sessionmaker[Session], clock: Clock, account_id: int
) -> None:
    inbound = _call(sessions, account_id, "inbound", 2026, 11, 2, 14, 0)
    _mark(sessions, inbound, "reached")  # inbound calls do not count
    unanswered = _call(sessions, account_id, "outbound", 2026, 11, 2, 15, 0)
    _mark(sessions, unanswered, "no_answer")
    _mark(sessions, _call(sessions, account_id, "outbound", 2026, 11, 2, 16, 0), "left_message")
    _call(sessions, account_id, "outbound", 2026, 11, 2, 17, 0)  # never marked
    other = _account(sessions, "B-2")
    _mark(sessions, _call(sessions, other, "outbound", 2026, 11, 2, 14, 0), "reached")
    guard = _guard(sessions, clock)
    assert guard.check(account_id, TO) is None

    corrected = _call(sessions, account_id, "outbound", 2026, 11, 2, 18, 0)
    _mark(sessions, corrected, "reached")
    assert guard.check(account_id, TO) is not None
    _mark(sessions, corrected, "no_answer")  # a correction: the latest marking counts
    assert guard.check(account_id, TO) is None
    with sessions() as session:
        kinds = session.scalars(
            select(CallOutcome.kind)
            .where(CallOutcome.call_id == corrected)
            .order_by(CallOutcome.id)
        )
        assert list(kinds) == ["reached", "no_answer"]  # history kept


def test_quiet_days_configurable_and_zero_is_off(
    sessions: sessionmaker[Session], clock: Clock, account_id: int
) -> None:
    _mark(sessions, _call(sessions, account_id, "outbound", 2026, 11, 2, 14, 0), "reached")
    clock.at(2026, 11, 3, 12, 0)  # day 2
    assert _guard(sessions, clock, quiet_days_after_conversation=0).check(account_id, TO) is None
    assert _guard(sessions, clock, quiet_days_after_conversation=1).check(account_id, TO) is None
    refusal = _guard(sessions, clock, quiet_days_after_conversation=2).check(account_id, TO)
    assert refusal is not None and "allowed from 2026-11-04 08:00" in refusal.reason


# -- destinations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "number", "allowed"),
    [
        (("+1*",), "+13125550100", True),
        (("+1*",), "+442071234567", False),
        (("+4420*",), "+442071234567", True),
        (("+4420*",), "+441611234567", False),
        (("+12125550101",), "+12125550101", True),
        (("+12125550101",), "+121255501010", False),
        (("+*",), "+442071234567", True),
        ((), "+13125550100", False),
        (("+1*",), "13125550100", False),  # not E.164
        (("+1*",), "+1", False),
        (("+*",), "+1 312 555 0100", False),
        (("+1*", "+44*"), "+442071234567", True),
    ],
)
def test_destination_allow_list(patterns: tuple[str, ...], number: str, allowed: bool) -> None:
    assert destination_allowed(patterns, number) is allowed


def test_destination_refusals(
    sessions: sessionmaker[Session], clock: Clock, account_id: int
) -> None:
    assert check_destination(CFG, "+442071234567") == Refusal(
        "destination_not_allowed",
        403,
        "destination +442071234567 is not in guardrails.allowed_destinations (+1*)",
    )
    refusal = check_destination(CFG, "3125550100")
    assert refusal is not None and refusal.status == 403
    assert (
        refusal.reason == "destination '3125550100' is not an E.164 number (+ and up to 15 digits)"
    )
    # Checked first, and even with the collections rules off (toll fraud).
    clock.at(2026, 11, 3, 23, 0)
    for enabled in (True, False):
        refusal = _guard(sessions, clock, enabled=enabled).check(account_id, "+442071234567")
        assert refusal is not None and refusal.rule == "destination_not_allowed"


def test_disabled_rules_allow_everything_but_destinations(
    sessions: sessionmaker[Session], clock: Clock, account_id: int
) -> None:
    for day in range(1, 10):
        _mark(sessions, _call(sessions, account_id, "outbound", 2026, 11, day, 9, 0), "reached")
    clock.at(2026, 11, 9, 23, 0)
    guard = _guard(sessions, clock, enabled=False)
    assert guard.check(account_id, TO) is None
    assert guard.check_account(account_id) is None


# -- the rest -----------------------------------------------------------------------------


def test_unknown_account_and_naive_clock(sessions: sessionmaker[Session], clock: Clock) -> None:
    with pytest.raises(UnknownAccount, match="no account with id 999"):
        _guard(sessions, clock).check(999, TO)
    naive = Guardrails(CFG, sessions, lambda: dt.datetime(2026, 11, 3, 12, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        naive.check_account(1)


def test_refusals_are_logged_and_can_be_audited(
    sessions: sessionmaker[Session],
    clock: Clock,
    account_id: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock.at(2026, 11, 3, 22, 0)
    with caplog.at_level(logging.INFO, logger="accounts.guardrails"):
        refusal = _guard(sessions, clock).check(account_id, TO)
    assert refusal is not None
    assert f"outbound call to '{TO}' for account id {account_id} refused (calling_hours)" in (
        caplog.text
    )
    record_refusal(sessions, None, None, "A-1", TO, refusal)
    [row] = entries(sessions, action=REFUSED)
    assert (row.user_name, row.target_type, row.target_id) == ("cli", "account", "A-1")
    assert row.detail == {
        "to": TO,
        "rule": "calling_hours",
        "status": 409,
        "reason": refusal.reason,
        "allowed_from": "2026-11-04T14:00:00+00:00",
    }


def test_calls_index_serves_the_attempt_query(
    engine: Engine, sessions: sessionmaker[Session], clock: Clock, account_id: int
) -> None:
    assert CALLS_BY_ACCOUNT in {ix["name"] for ix in inspect(engine).get_indexes("calls")}
    # A database created before the index: it is added with the call_outcomes table.
    with engine.begin() as conn:
        conn.execute(text(f"DROP INDEX {CALLS_BY_ACCOUNT}"))
        conn.execute(text("DROP TABLE call_outcomes"))
    create_schema(engine)
    assert CALLS_BY_ACCOUNT in {ix["name"] for ix in inspect(engine).get_indexes("calls")}
    if engine.dialect.name != "sqlite":
        return
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "FROM calls" in statement and "direction" in statement:
            statements.append((statement, params))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        _guard(sessions, clock).check(account_id, TO)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, params = statements[-1]
    with engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
    assert any(CALLS_BY_ACCOUNT in str(row) for row in plan), plan


# -- configuration ------------------------------------------------------------------------


def test_guardrails_config_defaults_and_overrides() -> None:
    cfg = from_mapping({}, {}).guardrails
    assert cfg == GuardrailsConfig(
        enabled=True,
        calling_hours_start="08:00",
        calling_hours_end="21:00",
        max_attempts=7,
        attempt_window_days=7,
        quiet_days_after_conversation=7,
        allowed_destinations=("+1*",),
        caller_id="",
    )
    assert cfg.hours == (dt.time(8), dt.time(21))
    env = {"VOICE_GUARDRAILS_ALLOWED_DESTINATIONS": "+1*, +4420*", "VOICE_GUARDRAILS_ENABLED": "0"}
    cfg = from_mapping({"guardrails": {"caller_id": "+12125550100"}}, env).guardrails
    assert (cfg.allowed_destinations, cfg.enabled) == (("+1*", "+4420*"), False)
    assert cfg.caller_id == "+12125550100"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"calling_hours_start": "8:00"}, "guardrails.calling_hours_start: expected a 24-hour"),
        ({"calling_hours_end": "24:00"}, "guardrails.calling_hours_end: expected a 24-hour"),
        ({"calling_hours_start": "21:00"}, "guardrails.calling_hours_end: '21:00' must be later"),
        ({"max_attempts": 0}, "guardrails.max_attempts: 0 is outside 1..100"),
        ({"attempt_window_days": 32}, "guardrails.attempt_window_days: 32 is outside 1..31"),
        ({"quiet_days_after_conversation": -1}, "guardrails.quiet_days_after_conversation"),
        ({"allowed_destinations": ["1*"]}, "guardrails.allowed_destinations: '1*' is not"),
        ({"allowed_destinations": ["+1*2"]}, "guardrails.allowed_destinations: '+1*2'"),
        ({"allowed_destinations": ["+0*"]}, "guardrails.allowed_destinations: '+0*'"),
        ({"allowed_destinations": ["*"]}, "guardrails.allowed_destinations: '*'"),
        ({"allowed_destinations": "+1*"}, "guardrails.allowed_destinations: expected a list"),
        ({"caller_id": "2125550100"}, "guardrails.caller_id: expected an E.164 number"),
        ({"enabled": "yes"}, "guardrails.enabled: expected true or false"),
        ({"max_calls": 3}, "unknown config key guardrails.max_calls"),
    ],
)
def test_guardrails_config_errors_name_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping({"guardrails": values}, {})
    assert str(err.value).startswith(message), str(err.value)
