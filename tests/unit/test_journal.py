import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from accounts.call_journal import CallJournal
from accounts.db import create_schema, make_engine, make_sessions
from accounts.models import Account, Call, CallEvent, Customer, Note
from accounts.services import UnknownAccount, UnknownCall


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield make_sessions(engine)
    engine.dispose()


@pytest.fixture
def account_id(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        customer = Customer(name="Acme")
        session.add(customer)
        session.flush()
        account = Account(number="10042", customer_id=customer.id)
        session.add(account)
        session.flush()
        return account.id


def _start(journal: CallJournal, sip_call_id: str = "abc@host") -> int:
    return journal.start_call(
        direction="inbound",
        caller="sip:+12125550101@gw",
        callee="sip:ivr@pbx",
        worker="worker-1",
        sip_call_id=sip_call_id,
    )


def _call(sessions: sessionmaker[Session], call_id: int) -> Call:
    with sessions() as session:
        call = session.get(Call, call_id)
        assert call is not None
        return call


def test_start_and_answer(sessions: sessionmaker[Session]) -> None:
    journal = CallJournal(sessions)
    call_id = _start(journal)
    call = _call(sessions, call_id)
    assert call.status == "in_progress"
    assert call.direction == "inbound"
    assert call.started_at.tzinfo == dt.UTC
    assert call.answered_at is None and call.ended_at is None

    journal.answered(call_id)
    first = _call(sessions, call_id).answered_at
    assert first is not None and first.tzinfo == dt.UTC
    journal.answered(call_id)
    assert _call(sessions, call_id).answered_at == first


def test_long_sip_values_are_journaled(sessions: sessionmaker[Session]) -> None:
    # Caller, callee and Call-ID come from the peer at any length (PostgreSQL checks VARCHAR).
    uri = "sip:" + "9" * 300 + "@gw.example;transport=tcp"
    call_id = CallJournal(sessions).start_call(
        direction="inbound", caller=uri, callee=uri, worker="w", sip_call_id="c" * 400
    )
    call = _call(sessions, call_id)
    assert (call.caller, call.callee, call.sip_call_id) == (uri, uri, "c" * 400)


def test_start_rejects_bad_direction(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(ValueError, match="direction"):
        CallJournal(sessions).start_call(
            direction="sideways", caller=None, callee=None, worker="w", sip_call_id="x"
        )


def test_events_sequence_per_call(sessions: sessionmaker[Session]) -> None:
    journal = CallJournal(sessions)
    first, second = _start(journal, "one"), _start(journal, "two")
    journal.add_event(first, "menu", {"choice": "1"})
    journal.add_event(second, "dtmf", {"digits": "42"})
    journal.add_event(first, "balance")
    journal.add_event(first, "hangup", {"by": "caller"})

    assert journal.events(first) == [
        ("menu", {"choice": "1"}),
        ("balance", {}),
        ("hangup", {"by": "caller"}),
    ]
    assert journal.events(second) == [("dtmf", {"digits": "42"})]
    with sessions() as session:
        seqs = session.scalars(
            select(CallEvent.seq).where(CallEvent.call_id == first).order_by(CallEvent.id)
        ).all()
    assert seqs == [1, 2, 3]
    with pytest.raises(UnknownCall):
        journal.add_event(999, "menu")


def test_finish_with_account_writes_note(sessions: sessionmaker[Session], account_id: int) -> None:
    journal = CallJournal(sessions)
    call_id = _start(journal)
    journal.set_account(call_id, account_id)
    note_id = journal.finish_call(
        call_id, status="completed", end_reason="caller_hangup", summary="Heard balance."
    )
    assert note_id is not None

    call = _call(sessions, call_id)
    assert (call.status, call.end_reason, call.summary) == (
        "completed",
        "caller_hangup",
        "Heard balance.",
    )
    assert call.ended_at is not None and call.ended_at.tzinfo == dt.UTC

    [note] = journal.notes_for_account(account_id)
    assert note.id == note_id
    assert (note.kind, note.author, note.body, note.call_id) == (
        "call",
        "ivr",
        "Heard balance.",
        call_id,
    )
    assert note.created_at == call.ended_at


def test_finish_is_one_transaction(sessions: sessionmaker[Session], account_id: int) -> None:
    journal = CallJournal(sessions)
    call_id = _start(journal)
    journal.set_account(call_id, account_id)
    engine = sessions.kw["bind"]
    statements: list[str] = []
    begins: list[object] = []

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split()[0].upper())

    def on_begin(conn: Any) -> None:
        begins.append(conn)

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "begin", on_begin)
    try:
        journal.finish_call(call_id, status="completed", end_reason="done", summary="s")
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "begin", on_begin)
    assert len(begins) == 1
    assert "UPDATE" in statements and "INSERT" in statements


FAILING_NOTES_TRIGGER = {
    "sqlite": [
        "CREATE TRIGGER notes_fail BEFORE INSERT ON notes "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION notes_fail() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'disk full' USING ERRCODE = 'check_violation'; END $$",
        "CREATE TRIGGER notes_fail BEFORE INSERT ON notes "
        "FOR EACH ROW EXECUTE FUNCTION notes_fail()",
    ],
}


def test_finish_rolls_back_call_update_when_note_fails(
    sessions: sessionmaker[Session], account_id: int
) -> None:
    journal = CallJournal(sessions)
    call_id = _start(journal)
    journal.set_account(call_id, account_id)
    with sessions.begin() as session:
        for statement in FAILING_NOTES_TRIGGER[session.get_bind().dialect.name]:
            session.execute(text(statement))

    with pytest.raises(IntegrityError, match="disk full"):
        journal.finish_call(call_id, status="completed", end_reason="done", summary="s")

    call = _call(sessions, call_id)
    assert call.status == "in_progress" and call.ended_at is None
    assert journal.notes_for_account(account_id) == []


def test_finish_without_account_writes_no_note(
    sessions: sessionmaker[Session], account_id: int
) -> None:
    journal = CallJournal(sessions)
    call_id = _start(journal)
    assert (
        journal.finish_call(call_id, status="interrupted", end_reason="worker_exit", summary="x")
        is None
    )
    assert _call(sessions, call_id).status == "interrupted"
    with sessions() as session:
        assert session.scalar(select(func.count(Note.id))) == 0


def test_finish_validation(sessions: sessionmaker[Session], account_id: int) -> None:
    journal = CallJournal(sessions)
    call_id = _start(journal)
    with pytest.raises(ValueError, match="status"):
        journal.finish_call(call_id, status="in_progress", end_reason="x", summary="x")
    journal.finish_call(call_id, status="failed", end_reason="media_error", summary="x")
    with pytest.raises(ValueError, match="already finished"):
        journal.finish_call(call_id, status="completed", end_reason="x", summary="x")
    with pytest.raises(UnknownCall):
        journal.finish_call(999, status="completed", end_reason="x", summary="x")
    with pytest.raises(UnknownAccount):
        journal.set_account(_start(journal, "other"), 999)
