import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from accounts.db import create_schema, make_engine, make_sessions
from accounts.importer import CsvImportError, RowError, import_csv
from accounts.models import Account, Collector, Contact, Customer, Invoice, Payment
from accounts.services import Ledger
from accounts.views import Balance

ACCOUNTS = """\
account_number,customer_name,currency,timezone,collector
A-100,Acme Corp,usd,America/Chicago,Dana
A-200,Globex,EUR,,Dana
A-300,Initech,,,
"""

# write(text, name="in.csv", encoding="utf-8") -> path of the written file
Write = Callable[..., Path]


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield make_sessions(engine)
    engine.dispose()


@pytest.fixture
def write(tmp_path: Path) -> Write:
    def _write(text: str, name: str = "in.csv", encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        path.write_bytes(text.encode(encoding))
        return path

    return _write


@pytest.fixture
def with_accounts(sessions: sessionmaker[Session], write: Write) -> None:
    assert import_csv(sessions, "accounts", write(ACCOUNTS, "accounts.csv")) == 3


def _errors(sessions: sessionmaker[Session], kind: str, path: Path) -> list[str]:
    with pytest.raises(CsvImportError) as info:
        import_csv(sessions, kind, path)
    assert all(isinstance(e, RowError) for e in info.value.errors)
    return [str(e) for e in info.value.errors]


def _count(sessions: sessionmaker[Session], model: type) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_import_accounts(sessions: sessionmaker[Session], with_accounts: None) -> None:
    with sessions() as session:
        accounts = {a.number: a for a in session.scalars(select(Account))}
        assert set(accounts) == {"A-100", "A-200", "A-300"}
        assert accounts["A-100"].currency == "USD"
        assert accounts["A-100"].timezone == "America/Chicago"
        assert accounts["A-200"].currency == "EUR"
        assert accounts["A-200"].timezone == "America/New_York"
        assert accounts["A-300"].collector_id is None
        [dana] = session.scalars(select(Collector)).all()
        assert dana.name == "Dana" and dana.active
        assert accounts["A-100"].collector_id == accounts["A-200"].collector_id == dana.id
        assert accounts["A-100"].customer.name == "Acme Corp"


def test_accounts_upsert(
    sessions: sessionmaker[Session], with_accounts: None, write: Write
) -> None:
    path = write(
        "account_number,customer_name,collector\nA-100,Acme Corporation,Lee\nA-400,New Co,\n"
    )
    assert import_csv(sessions, "accounts", path) == 2
    with sessions() as session:
        a100 = session.scalars(select(Account).where(Account.number == "A-100")).one()
        assert a100.customer.name == "Acme Corporation"
        # Columns absent or blank keep their stored values.
        assert (a100.currency, a100.timezone) == ("USD", "America/Chicago")
        lee = session.scalars(select(Collector).where(Collector.name == "Lee")).one()
        assert a100.collector_id == lee.id
    assert _count(sessions, Account) == 4


def test_import_contacts_invoices_payments(
    sessions: sessionmaker[Session],
    with_accounts: None,
    write: Write,
) -> None:
    contacts = write(
        "account_number,phone,label\n"
        "A-100,(212) 555-0123,AP desk\n"
        "A-200,tel:+1-212-555-0123,\n"
        "A-300,+1 312 555 0142,\n",
        "contacts.csv",
    )
    invoices = write(
        "account_number,invoice_number,issue_date,due_date,amount,open_amount\n"
        'A-100,INV-1,2024-01-01,2024-01-31,"1,234.56",\n'
        "A-100,INV-2,2024-05-01,2024-05-31,100,25.5\n"
        "A-200,INV-1,2024-06-01,2024-07-01,0.99,0\n",
        "invoices.csv",
    )
    payments = write(
        "account_number,date,amount,reference\nA-100,2024-02-01,500.00,CHK-1\n",
        "payments.csv",
    )
    assert import_csv(sessions, "contacts", contacts) == 3
    assert import_csv(sessions, "invoices", invoices) == 3
    assert import_csv(sessions, "payments", payments) == 1

    ledger = Ledger(sessions)
    assert [a.number for a in ledger.accounts_for_phone("+12125550123")] == ["A-100", "A-200"]
    a100 = ledger.account_by_number("A-100")
    assert a100 is not None
    assert ledger.balance(a100.id, dt.date(2024, 6, 15)) == Balance(126006, 126006, "USD")
    last = ledger.last_invoice(a100.id)
    assert last is not None and (last.number, last.amount_cents, last.open_cents) == (
        "INV-2",
        10000,
        2550,
    )
    payment = ledger.last_payment(a100.id)
    assert payment is not None and (payment.amount_cents, payment.reference) == (50000, "CHK-1")


def test_reimport_upserts(
    sessions: sessionmaker[Session],
    with_accounts: None,
    write: Write,
) -> None:
    header = "account_number,invoice_number,issue_date,due_date,amount,open_amount\n"
    import_csv(sessions, "invoices", write(header + "A-100,INV-1,2024-01-01,2024-01-31,100,100\n"))
    import_csv(sessions, "invoices", write(header + "A-100,INV-1,2024-01-01,2024-01-31,100,40\n"))
    with sessions() as session:
        [invoice] = session.scalars(select(Invoice)).all()
        assert invoice.open_cents == 4000

    pay = "account_number,date,amount,reference\nA-100,2024-02-01,{},R1\n"
    import_csv(sessions, "payments", write(pay.format("10")))
    import_csv(sessions, "payments", write(pay.format("12")))
    with sessions() as session:
        assert session.scalars(select(Payment.amount_cents)).all() == [1200]

    contacts = "account_number,phone,label\nA-100,2125550123,{}\n"
    import_csv(sessions, "contacts", write(contacts.format("old")))
    import_csv(sessions, "contacts", write(contacts.format("new")))
    with sessions() as session:
        assert session.scalars(select(Contact.label)).all() == ["new"]


def test_quoted_multiline_and_blank_lines_keep_line_numbers(
    sessions: sessionmaker[Session],
    with_accounts: None,
    write: Write,
) -> None:
    path = write(
        "account_number,phone,label\n"  # 1
        'A-100,2125550123,"two\nlines"\n'  # 2-3
        "\n"  # 4
        "A-100,12ab,\n"  # 5
    )
    assert _errors(sessions, "contacts", path) == [
        "line 5: invalid phone '12ab': not a phone number"
    ]


def test_each_error_kind_reported_with_line_numbers(
    sessions: sessionmaker[Session],
    with_accounts: None,
    write: Write,
) -> None:
    invoices = write(
        "account_number,invoice_number,issue_date,due_date,amount,open_amount\n"  # 1
        "A-100,I-1,2024-01-01,2024-01-31,100.00,\n"  # 2 ok
        "A-999,I-2,2024-01-01,2024-01-31,100.00,\n"  # 3
        "A-100,I-3,2024-02-30,01/31/2024,100.00,\n"  # 4
        "A-100,I-4,2024-01-01,2024-01-31,1.234,\n"  # 5
        "A-100,I-5,2024-01-01,2024-01-31,-5.00,\n"  # 6
        "A-100,I-6,2024-01-01,2024-01-31,12abc,\n"  # 7
        "A-100,I-7,2024-01-01,2024-01-31,100.00,100.01\n"  # 8
        "A-100,I-8,2024-02-01,2024-01-01,1,\n"  # 9
        "A-100,I-1,2024-01-01,2024-01-31,1,\n"  # 10
        "A-100,,2024-01-01,2024-01-31,1,\n"  # 11
        "A-100,I-9,2024-01-01\n"  # 12
    )
    assert _errors(sessions, "invoices", invoices) == [
        "line 3: unknown account 'A-999'",
        "line 4: invalid issue_date '2024-02-30': expected a date as YYYY-MM-DD",
        "line 4: invalid due_date '01/31/2024': expected a date as YYYY-MM-DD",
        "line 5: invalid amount '1.234': more than 2 decimal places",
        "line 6: negative amount '-5.00'",
        "line 7: invalid amount '12abc': expected a number like 1234.56 or 1,234.56",
        "line 8: open_amount '100.01' is more than amount '100.00'",
        "line 9: due_date 2024-01-01 is before issue_date 2024-02-01",
        "line 10: duplicate invoice 'I-1' (first on line 2)",
        "line 11: invoice_number is empty",
        "line 12: expected 6 fields, found 3",
    ]
    assert _count(sessions, Invoice) == 0


def test_account_contact_payment_errors(
    sessions: sessionmaker[Session],
    with_accounts: None,
    write: Write,
) -> None:
    accounts = write(
        "account_number,customer_name,currency,timezone\n"
        "A-500,New,US Dollars,Mars/Olympus\n"
        ",Nameless,,\n"
        "A-600,,,\n"
        "A-500,Again,,\n"
    )
    assert _errors(sessions, "accounts", accounts) == [
        "line 2: invalid currency 'US Dollars': expected a 3-letter code like USD",
        "line 2: unknown timezone 'Mars/Olympus': expected a name like America/Chicago",
        "line 3: account_number is empty",
        "line 4: customer_name is empty",
        "line 5: duplicate account 'A-500' (first on line 2)",
    ]
    contacts = write(
        "account_number,phone\nA-100,12ab\nA-100,2125550123\nA-100,212-555-0123\nA-404,2125550123\n"
    )
    assert _errors(sessions, "contacts", contacts) == [
        "line 2: invalid phone '12ab': not a phone number",
        "line 4: duplicate contact +12125550123 (first on line 3)",
        "line 5: unknown account 'A-404'",
    ]
    payments = write(
        "account_number,date,amount,reference\nA-100,2024-01-01,0,R1\nA-100,2024-01-01,5,\n"
    )
    assert _errors(sessions, "payments", payments) == [
        "line 2: payment amount is zero",
        "line 3: reference is empty",
    ]
    assert _count(sessions, Account) == 3
    assert _count(sessions, Contact) == 0
    assert _count(sessions, Payment) == 0


def test_one_bad_row_imports_nothing(sessions: sessionmaker[Session], write: Write) -> None:
    path = write(
        "account_number,customer_name,timezone\n"
        "B-1,One,\n"
        "B-2,Two,\n"
        "B-3,Three,Not/AZone\n"
        "B-4,Four,\n"
    )
    errors = _errors(sessions, "accounts", path)
    assert errors == ["line 4: unknown timezone 'Not/AZone': expected a name like America/Chicago"]
    assert _count(sessions, Account) == 0
    assert _count(sessions, Customer) == 0


def test_header_errors(sessions: sessionmaker[Session], write: Write) -> None:
    [error] = _errors(sessions, "contacts", write("account_number,telephone\nA-1,2125550123\n"))
    assert error.startswith("line 1: unknown column(s) 'telephone'; missing required column(s)")
    assert "'phone'" in error
    [error] = _errors(sessions, "payments", write("account_number,date,amount\n"))
    assert error.startswith("line 1: missing required column(s) 'reference'")


def test_header_is_case_and_space_insensitive_and_bom_ok(
    sessions: sessionmaker[Session],
    write: Write,
) -> None:
    path = write(" Account_Number , Customer_Name \nC-1,Cee\n", encoding="utf-8-sig")
    assert import_csv(sessions, "accounts", path) == 1


def test_empty_and_undecodable_files(sessions: sessionmaker[Session], write: Write) -> None:
    assert _errors(sessions, "accounts", write("")) == [
        "line 1: file is empty; expected a header row"
    ]
    assert _errors(sessions, "accounts", write(" \n\n")) == [
        "line 1: file is empty; expected a header row"
    ]
    path = write("account_number,customer_name\nC-1,Caf\xe9\n", encoding="latin-1")
    assert _errors(sessions, "accounts", path) == [
        "line 2: not UTF-8 text (byte 0xe9); save the file as UTF-8 CSV"
    ]
    assert _count(sessions, Account) == 0


def test_header_only_imports_nothing(sessions: sessionmaker[Session], write: Write) -> None:
    assert import_csv(sessions, "accounts", write("account_number,customer_name\n")) == 0


def test_unknown_kind(sessions: sessionmaker[Session], write: Write) -> None:
    with pytest.raises(ValueError, match="kind"):
        import_csv(sessions, "customers", write("a\n"))


def test_error_message_lists_all_problems(sessions: sessionmaker[Session], write: Write) -> None:
    path = write("account_number,phone\nX,1\nY,2\n")
    with pytest.raises(CsvImportError) as info:
        import_csv(sessions, "contacts", path)
    message = str(info.value)
    assert "nothing imported" in message
    assert "line 2: unknown account 'X'" in message and "line 3: unknown account 'Y'" in message


def test_values_longer_than_their_column_are_row_errors(
    sessions: sessionmaker[Session], with_accounts: None, write: Write
) -> None:
    # PostgreSQL refuses an over-long VARCHAR where SQLite stores it: both must report the row.
    long_number = "N" * 65
    accounts = write(f"account_number,customer_name\n{long_number},Acme\nA-5,{'c' * 301}\n")
    assert _errors(sessions, "accounts", accounts) == [
        "line 2: account_number is longer than 64 characters",
        "line 3: customer_name is longer than 300 characters",
    ]
    payments = write(f"account_number,date,amount,reference\nA-100,2024-02-01,1,{'r' * 101}\n")
    assert _errors(sessions, "payments", payments) == [
        "line 2: reference is longer than 100 characters"
    ]
    assert _count(sessions, Account) == 3


def test_nul_bytes_are_refused(sessions: sessionmaker[Session], write: Write) -> None:
    path = write("account_number,customer_name\nC-1,Acme\nC-2,Ac\x00me\n")
    assert _errors(sessions, "accounts", path) == [
        "line 3: contains NUL bytes (0x00): is it UTF-16? save the file as UTF-8 CSV"
    ]


def test_amounts_beyond_32_bits(
    sessions: sessionmaker[Session], with_accounts: None, write: Write
) -> None:
    header = "account_number,invoice_number,issue_date,due_date,amount\n"
    big = write(header + 'A-100,BIG,2024-01-01,2024-01-31,"30,000,000.00"\n')
    assert import_csv(sessions, "invoices", big) == 1
    a100 = Ledger(sessions).account_by_number("A-100")
    assert a100 is not None
    balance = Ledger(sessions).balance(a100.id, dt.date(2024, 6, 15))
    assert balance == Balance(3_000_000_000, 3_000_000_000, "USD")
    huge = write(header + "A-100,HUGE,2024-01-01,2024-01-31,100000000000000000\n")
    assert _errors(sessions, "invoices", huge) == [
        "line 2: amount '100000000000000000' is too large"
    ]


def test_account_numbers_the_api_cannot_address_are_refused(
    sessions: sessionmaker[Session], write: Write
) -> None:
    accounts = write(
        "account_number,customer_name\n../etc,Trick\n-lead,Dash first\nA 1,Fine spaced\n"
        "trail ,Space last\nB/2,Slash\n"
    )
    errors = _errors(sessions, "accounts", accounts)
    assert [e.split(":")[0] for e in errors] == ["line 2", "line 3", "line 6"]
    assert all("invalid account number" in e for e in errors)
    assert _count(sessions, Account) == 0  # all or nothing
