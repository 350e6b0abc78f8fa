import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from accounts.db import create_schema, make_engine, make_sessions
from accounts.demo import load_demo_if_empty
from accounts.models import Account, Contact, Customer, Invoice, Payment
from accounts.services import Ledger, UnknownAccount
from accounts.views import AccountSummary, Balance, InvoiceSummary, PaymentSummary

TODAY = dt.date(2024, 6, 15)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield make_sessions(engine)
    engine.dispose()


def _account(session: Session, number: str, customer: str = "Acme", currency: str = "USD") -> int:
    cust = Customer(name=customer)
    session.add(cust)
    session.flush()
    account = Account(number=number, customer_id=cust.id, currency=currency)
    session.add(account)
    session.flush()
    return account.id


def _invoice(
    account_id: int, number: str, issued: dt.date, due: dt.date, amount: int, open_: int
) -> Invoice:
    return Invoice(
        account_id=account_id,
        number=number,
        issue_date=issued,
        due_date=due,
        amount_cents=amount,
        open_cents=open_,
    )


def test_make_engine_sqlite_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "voice.db"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=1234)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 1234
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert path.parent.is_dir()
    finally:
        engine.dispose()


def test_foreign_keys_enforced(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.add(Contact(account_id=999, phone_e164="+12125550123"))


def test_accounts_for_phone_single_shared_and_none(sessions: sessionmaker[Session]) -> None:
    assert load_demo_if_empty(sessions) is True
    assert load_demo_if_empty(sessions) is False
    ledger = Ledger(sessions)

    [single] = ledger.accounts_for_phone("sip:+12125550101@gw.example")
    assert single.number == "10042"
    assert single.customer_name == "Northwind Traders"
    assert single.currency == "USD"
    assert single.collector_id is not None

    shared = ledger.accounts_for_phone("12125550102")
    assert [a.number for a in shared] == ["20001", "20002"]

    assert ledger.accounts_for_phone("+12125550123") == []
    assert ledger.accounts_for_phone("anonymous") == []
    assert ledger.accounts_for_phone(None) == []


def test_accounts_for_phone_ordered_by_number(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        for number in ["B-2", "A-1", "C-3"]:
            account_id = _account(session, number)
            session.add(Contact(account_id=account_id, phone_e164="+12125550123"))
    summaries = Ledger(sessions).accounts_for_phone("(212) 555-0123")
    assert [s.number for s in summaries] == ["A-1", "B-2", "C-3"]
    assert all(isinstance(s, AccountSummary) for s in summaries)


def test_account_by_number(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        plain = _account(session, "10042", customer="Northwind")
        dashed = _account(session, "77-88", customer="Dashed")
    ledger = Ledger(sessions)

    found = ledger.account_by_number("10042")
    assert found == AccountSummary(plain, "10042", "Northwind", "USD", None)
    assert ledger.account_by_number(" 100-42 ") == found
    # Digits keyed by a caller still find a number stored with a separator.
    dashed_found = ledger.account_by_number("7788")
    assert dashed_found is not None and dashed_found.id == dashed
    assert ledger.account_by_number("99999") is None
    assert ledger.account_by_number("") is None


def test_account_by_number_is_not_injectable(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        _account(session, "10042")
    ledger = Ledger(sessions)
    assert ledger.account_by_number("' OR '1'='1") is None
    assert ledger.account_by_number("10042'; DROP TABLE accounts; --") is None
    assert ledger.account_by_number("10042") is not None


def test_balance(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        account_id = _account(session, "1", currency="EUR")
        other = _account(session, "2")
        session.add_all(
            [
                _invoice(account_id, "I1", dt.date(2024, 4, 1), dt.date(2024, 5, 1), 10000, 7500),
                # Due today is not yet past due.
                _invoice(account_id, "I2", dt.date(2024, 5, 15), TODAY, 20000, 20000),
                _invoice(account_id, "I3", dt.date(2024, 6, 1), dt.date(2024, 7, 1), 5000, 5000),
                _invoice(account_id, "I4", dt.date(2024, 1, 1), dt.date(2024, 2, 1), 9900, 0),
                _invoice(other, "X", dt.date(2024, 1, 1), dt.date(2024, 2, 1), 12345, 12345),
            ]
        )
        empty = _account(session, "3")
    ledger = Ledger(sessions)
    assert ledger.balance(account_id, TODAY) == Balance(32500, 7500, "EUR")
    assert ledger.balance(account_id, dt.date(2024, 6, 16)) == Balance(32500, 27500, "EUR")
    assert ledger.balance(empty, TODAY) == Balance(0, 0, "USD")
    with pytest.raises(UnknownAccount):
        ledger.balance(12345, TODAY)


def test_last_invoice_and_payment(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        account_id = _account(session, "1", currency="CAD")
        session.add_all(
            [
                _invoice(account_id, "OLD", dt.date(2024, 1, 1), dt.date(2024, 2, 1), 100, 100),
                _invoice(account_id, "SAME-1", dt.date(2024, 3, 1), dt.date(2024, 4, 1), 200, 0),
                _invoice(account_id, "SAME-2", dt.date(2024, 3, 1), dt.date(2024, 4, 2), 300, 50),
                Payment(
                    account_id=account_id, date=dt.date(2024, 2, 1), amount_cents=5, reference="P1"
                ),
                Payment(
                    account_id=account_id, date=dt.date(2024, 5, 1), amount_cents=7, reference="P2"
                ),
                Payment(
                    account_id=account_id, date=dt.date(2024, 5, 1), amount_cents=9, reference="P3"
                ),
            ]
        )
        empty = _account(session, "2")
    ledger = Ledger(sessions)
    assert ledger.last_invoice(account_id) == InvoiceSummary(
        "SAME-2", dt.date(2024, 3, 1), dt.date(2024, 4, 2), 300, 50, "CAD"
    )
    assert ledger.last_payment(account_id) == PaymentSummary(dt.date(2024, 5, 1), 9, "P3", "CAD")
    assert ledger.last_invoice(empty) is None
    assert ledger.last_payment(empty) is None


def test_demo_balances(sessions: sessionmaker[Session]) -> None:
    load_demo_if_empty(sessions)
    ledger = Ledger(sessions)
    today = dt.date.today()
    expected = {
        "10042": Balance(173000, 125000, "USD"),
        "20001": Balance(150000, 150000, "USD"),
        "20002": Balance(32000, 0, "USD"),
        "30003": Balance(425000, 425000, "USD"),
    }
    for number, balance in expected.items():
        account = ledger.account_by_number(number)
        assert account is not None
        assert ledger.balance(account.id, today) == balance
    account = ledger.account_by_number("30003")
    assert account is not None
    for phone in ("+12125550101", "+12125550102"):
        assert account.id not in [a.id for a in ledger.accounts_for_phone(phone)]
