"""Verification values on file and the lock-out, on real SQLite and PostgreSQL; the importer's
new optional columns."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from accounts.call_journal import CallJournal
from accounts.importer import CsvImportError, import_csv
from accounts.models import Account, AuditEntry, CallOutcome
from accounts.promises import CallPromises
from accounts.verification import (
    WITHHELD,
    AccountVerifier,
    CallVerifier,
    Lockout,
    VerificationAttempt,
    Verifications,
    VerifierValueError,
    caller_key,
    date_of_birth_on_file,
    digest,
    keyed_value,
    matches,
    postal_code_on_file,
    record_attempt,
)
from accounts.write_behind import WriteBehind
from voice.calls import journal
from voice.calls.journal import CallLog

ACCOUNTS = """\
account_number,customer_name,postal_code,date_of_birth
A-100,Acme Corp,10001,1976-07-04
A-200,Globex,94105-1234,
A-300,Initech,,
"""
CALLER = "+12125550101"
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def sessions(db_sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    return db_sessions


@pytest.fixture
def accounts(sessions: sessionmaker[Session], tmp_path: Path) -> dict[str, int]:
    path = tmp_path / "accounts.csv"
    path.write_text(ACCOUNTS)
    assert import_csv(sessions, "accounts", path) == 3
    with sessions() as session:
        return {n: i for n, i in session.execute(select(Account.number, Account.id))}


def service(sessions: sessionmaker[Session], failures: int = 5) -> Verifications:
    return Verifications(sessions, Lockout(failures, HOUR))


def record(sessions: sessionmaker[Session], *attempt: Any) -> None:
    with sessions.begin() as session:
        record_attempt(session, *attempt)


def new_call(sessions: sessionmaker[Session], sip: str, caller: str | None = CALLER) -> int:
    return CallJournal(sessions).start_call(
        direction="inbound", caller=caller, callee="ivr", worker="w0", sip_call_id=sip
    )


def call_log(
    sessions: sessionmaker[Session], call_id: int, writes: WriteBehind | None = None
) -> CallLog:
    """The call's log as the worker builds it (voice/calls/kit.py), on the real database."""
    return CallLog(CallJournal(sessions), call_id, sessions=sessions, writes=writes)


def test_values_are_stored_hashed_and_check(
    sessions: sessionmaker[Session], accounts: dict[str, int]
) -> None:
    with sessions() as session:
        rows = session.scalars(select(AccountVerifier)).all()
    assert len(rows) == 3  # A-100 both, A-200 postal code, A-300 nothing
    assert all(r.digest.startswith("scrypt$") for r in rows)
    assert not any(v in r.digest for r in rows for v in ("10001", "19760704", "94105"))
    v = service(sessions)
    assert v.check(accounts["A-100"], "postal_code", "10001")
    assert not v.check(accounts["A-100"], "postal_code", "10002")
    assert v.check(accounts["A-100"], "date_of_birth", "07041976")  # keyed MMDDYYYY
    assert not v.check(accounts["A-100"], "date_of_birth", "04071976")
    assert v.check(accounts["A-200"], "postal_code", "94105")  # ZIP+4 keyed as the ZIP
    assert not v.on_file(accounts["A-200"], "date_of_birth")
    assert not v.on_file(accounts["A-300"], "postal_code")
    assert not v.check(accounts["A-300"], "postal_code", "")


def test_reimport_replaces_a_value_and_blank_keeps_it(
    sessions: sessionmaker[Session], accounts: dict[str, int], tmp_path: Path
) -> None:
    path = tmp_path / "again.csv"
    path.write_text("account_number,customer_name,postal_code\nA-100,Acme Corp,10002\n"
                    "A-200,Globex,\n")  # fmt: skip
    import_csv(sessions, "accounts", path)
    v = service(sessions)
    assert v.check(accounts["A-100"], "postal_code", "10002")
    assert not v.check(accounts["A-100"], "postal_code", "10001")
    assert v.check(accounts["A-200"], "postal_code", "94105")


def test_importer_refuses_bad_values_with_their_line(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("account_number,customer_name,postal_code,date_of_birth\n"
                    "B-1,One,ABC12,\nB-2,Two,,1976-13-01\nB-3,Three,,2999-01-01\n"
                    "B-4,Four,1234,\n")  # fmt: skip
    with pytest.raises(CsvImportError) as info:
        import_csv(sessions, "accounts", path)
    lines = [str(e) for e in info.value.errors]
    assert lines[0].startswith("line 2: postal_code 'ABC12' is not a US ZIP code")
    assert lines[1].startswith("line 3: date_of_birth '1976-13-01' is not a date")
    assert lines[2].startswith("line 4: date_of_birth '2999-01-01' is not a plausible")
    assert lines[3].startswith("line 5: postal_code '1234' is not a US ZIP code")
    with sessions() as session:
        assert session.scalars(select(Account)).all() == []  # nothing imported


def test_lockout_after_five_failed_calls_from_one_number(
    sessions: sessionmaker[Session], accounts: dict[str, int]
) -> None:
    v, account = service(sessions), accounts["A-100"]
    journal = CallJournal(sessions)
    calls = [journal.start_call(direction="inbound", caller=CALLER, callee="ivr", worker="w0",
                                sip_call_id=f"c{i}") for i in range(7)]  # fmt: skip
    for call in calls[:4]:  # four calls each with three wrong tries
        for attempt in (1, 2, 3):
            record(sessions, CALLER, account, call, "postal_code", False, attempt)
    now = dt.datetime.now(dt.UTC)
    assert v.locked_until(CALLER, account, now) is None
    record(sessions, CALLER, account, calls[4], "postal_code", False, 1)  # and a hang-up after one
    now = dt.datetime.now(dt.UTC)
    until = v.locked_until(CALLER, account, now)
    assert until is not None and now < until <= now + HOUR
    assert until > now + HOUR - dt.timedelta(minutes=1)  # the oldest failure is minutes old
    # Another number is locked too on this account (distributed guessing), and the lock ends.
    assert v.locked_until("+13125550142", account, now) is not None
    assert v.locked_until(CALLER, account, until + dt.timedelta(seconds=1)) is None
    # Every failure is audited under the IVR, with the caller and the call.
    with sessions() as session:
        audited = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "verify.failed")
        ).all()
    assert len(audited) == 13 and {a.user_name for a in audited} == {"ivr"}
    assert audited[0].detail["caller"] == CALLER and audited[0].target_id == str(account)


def test_a_call_that_verified_in_the_end_is_no_failure(
    sessions: sessionmaker[Session], accounts: dict[str, int]
) -> None:
    v, account = service(sessions, failures=1), accounts["A-100"]
    call = CallJournal(sessions).start_call(
        direction="inbound", caller=CALLER, callee="ivr", worker="w0", sip_call_id="x"
    )
    record(sessions, CALLER, account, call, "postal_code", False, 1)
    record(sessions, CALLER, account, call, "postal_code", True, 2)
    assert v.locked_until(CALLER, account) is None
    with sessions() as session:
        assert len(session.scalars(select(VerificationAttempt)).all()) == 2


async def test_call_verifier_over_the_database(
    sessions: sessionmaker[Session], accounts: dict[str, int]
) -> None:
    call = new_call(sessions, "y", caller=None)
    verifier = CallVerifier(service(sessions), "postal_code", None, call_log(sessions, call))
    assert (verifier.prompt, verifier.max_digits) == ("verify_zip_code", 5)
    assert await verifier.on_file(accounts["A-100"])
    assert not await verifier.attempt(accounts["A-100"], "99999", 1)
    assert await verifier.attempt(accounts["A-100"], "10001", 2)
    with sessions() as session:
        callers = set(session.scalars(select(VerificationAttempt.caller)))
    assert callers == {WITHHELD}


async def test_call_promises_store_a_promise_to_pay_outcome(
    sessions: sessionmaker[Session], accounts: dict[str, int]
) -> None:
    journal = CallJournal(sessions)
    call = journal.start_call(
        direction="inbound", caller=CALLER, callee="ivr", worker="w0", sip_call_id="z"
    )
    journal.set_account(call, accounts["A-100"])
    promises = CallPromises(sessions, call_log(sessions, call))
    today = await promises.today()
    assert await promises.store(50000, today + dt.timedelta(days=7))
    assert not await promises.store(50000, today - dt.timedelta(days=3))  # refused, logged
    with sessions() as session:
        [outcome] = session.scalars(select(CallOutcome)).all()
    assert (outcome.kind, outcome.amount_cents, outcome.user) == ("promise_to_pay", 50000, "ivr")
    assert outcome.promise_date == today + dt.timedelta(days=7)


def test_value_helpers() -> None:
    assert postal_code_on_file("10001") == "10001"
    assert postal_code_on_file("94105-1234") == "94105"
    assert postal_code_on_file("1010 AB".replace(" AB", ""), region="NL") == "1010"
    with pytest.raises(VerifierValueError):
        postal_code_on_file("SW1A 1AA", region="GB")
    assert date_of_birth_on_file("1976-07-04") == "19760704"
    with pytest.raises(VerifierValueError):
        date_of_birth_on_file("04/07/1976")
    assert keyed_value("date_of_birth", "07041976") == "19760704"
    assert keyed_value("date_of_birth", "13041976") is None
    assert keyed_value("postal_code", "1*001") is None
    stored = digest("10001")
    assert matches(stored, "10001") and not matches(stored, "10002")
    assert digest("10001") != stored  # salted
    assert not matches("garbage", "10001") and not matches("scrypt$x$y$z$00$00", "1")
    assert caller_key("+12125550101") == "+12125550101"
    assert caller_key("(212) 555-0101") == "+12125550101"
    assert caller_key(None) == WITHHELD and caller_key("anonymous") == WITHHELD


async def test_implausible_keys_are_a_wrong_try_but_no_guess(
    sessions: sessionmaker[Session], accounts: dict[str, int]
) -> None:
    log = call_log(sessions, new_call(sessions, "i"))
    verifier = CallVerifier(service(sessions), "postal_code", CALLER, log)
    assert not await verifier.attempt(accounts["A-100"], "1", 1)  # a menu key typed ahead
    assert not await verifier.attempt(accounts["A-100"], "100011", 2)
    with sessions() as session:
        assert session.scalars(select(VerificationAttempt)).all() == []


# -- the writes go through the call's CallLog (voice/calls/journal.py) ------------------------


def attempts(sessions: sessionmaker[Session], call_id: int) -> list[tuple[str, bool]]:
    with sessions() as session:
        rows = session.execute(
            select(VerificationAttempt.caller, VerificationAttempt.ok)
            .where(VerificationAttempt.call_id == call_id)
            .order_by(VerificationAttempt.id)
        ).all()
    return [(caller, ok) for caller, ok in rows]


async def test_a_try_counts_for_the_next_lockout_check_though_the_call_writes_behind(
    sessions: sessionmaker[Session], accounts: dict[str, int], tmp_path: Path
) -> None:
    # The worker's write-behind is not running: whatever is handed to it stays queued. The
    # try must be in the database anyway when the caller hears the answer, or a caller could
    # redial (to this worker or another) before the lock-out sees it.
    writes = WriteBehind(sessions, tmp_path / "spool" / "w0.jsonl")
    v, account = service(sessions, failures=1), accounts["A-100"]
    call = new_call(sessions, "behind")
    log = call_log(sessions, call, writes)
    verifier = CallVerifier(v, "postal_code", CALLER, log)
    await log.event("verify", {"result": "wrong"})  # an event: queued behind the call
    assert not await verifier.attempt(account, "99999", 1)
    assert writes.pending == 1  # the event still waits, the try does not
    assert attempts(sessions, call) == [(CALLER, False)]
    assert v.locked_until(CALLER, account) is not None
    assert await verifier.locked_until(account) is not None
    with sessions() as session:
        audited = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "verify.failed")
        ).all()
    assert [a.detail["call_id"] for a in audited] == [call]


async def test_a_refused_try_is_retried_and_one_never_written_leaves_the_answer(
    sessions: sessionmaker[Session],
    accounts: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = {"left": 2}

    def locked_twice(session: Session, *attempt: Any) -> None:
        if refusals["left"]:
            refusals["left"] -= 1
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
        record_attempt(session, *attempt)

    monkeypatch.setattr(journal.verification, "record_attempt", locked_twice)
    call = new_call(sessions, "retried")
    verifier = CallVerifier(service(sessions), "postal_code", CALLER, call_log(sessions, call))
    assert await verifier.attempt(accounts["A-100"], "10001", 1)
    assert refusals["left"] == 0 and attempts(sessions, call) == [(CALLER, True)]
    # Refused every time: logged, and the caller still hears that the value was right.
    refusals["left"] = journal.DB_TRIES
    monkeypatch.setattr("accounts.retry.asyncio.sleep", _instant)
    assert await verifier.attempt(accounts["A-100"], "10001", 2)
    assert attempts(sessions, call) == [(CALLER, True)]
    assert "verification attempt not journaled" in caplog.text


async def _instant(_seconds: float) -> None:
    return None


async def test_a_promise_waits_for_the_account_the_call_set_behind(
    sessions: sessionmaker[Session], accounts: dict[str, int], tmp_path: Path
) -> None:
    # The IVR identified the account: `set_account` is queued behind the call, and the writer
    # only gets to it later. The promise (an outcome on the call's account) must wait for it,
    # not be refused as a call without an account.
    writes = WriteBehind(sessions, tmp_path / "spool" / "w0.jsonl")
    call = new_call(sessions, "promise")
    log = call_log(sessions, call, writes)
    await log.set_account(accounts["A-100"])
    assert writes.pending == 1

    async def write_late() -> None:
        await asyncio.sleep(0.3)
        await writes.run()

    writer = asyncio.create_task(write_late())
    try:
        promises = CallPromises(sessions, log)
        today = await promises.today()
        assert writes.pending == 0
        assert await promises.store(12345, today + dt.timedelta(days=3))
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    with sessions() as session:
        [outcome] = session.scalars(select(CallOutcome)).all()
    assert (outcome.call_id, outcome.kind, outcome.amount_cents) == (call, "promise_to_pay", 12345)
