"""Right-party verification and the keypad promise to pay, over a scripted caller.

The rule under test: nothing about the debt (amounts, invoices, dates) is spoken, and no answer
is composed from the ledger, until the caller keyed the value on file.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from fakes import HANGUP, FakeCall, FakeJournal, FakeLedger
from test_inbound_flow import (
    NORTHWIND,
    NW_BALANCE,
    NW_BALANCE_TOKENS,
    ONE_PHONE,
    UNKNOWN_PHONE,
    make_ledger,
)

from voice.config import IvrConfig
from voice.ivr import say
from voice.ivr.inbound import InboundFlow, summarise
from voice.ivr.promise import amount_problem, date_problem, parse_amount, parse_date
from voice.ivr.prompts import PROMPTS

TODAY = dt.date(2026, 12, 3)
# Every prompt that tells something about the debt; none may be heard unverified.
DISCLOSING = {
    key for key in PROMPTS
    if key.startswith(("balance_", "invoice_", "payment_", "promise_", "nothing_past"))
}  # fmt: skip


@dataclass
class FakeVerifier:
    """The value on file per account id; attempts and lock-out as the real service keeps them."""

    on_record: dict[int, str] = field(default_factory=lambda: {1: "10001"})
    locked: dt.datetime | None = None
    kind: str = "postal_code"
    prompt: str = "verify_zip_code"
    max_digits: int = 5
    attempts: list[tuple[int, str, int, bool]] = field(default_factory=list)

    async def on_file(self, account_id: int) -> bool:
        return account_id in self.on_record

    async def locked_until(self, account_id: int) -> dt.datetime | None:
        return self.locked

    async def attempt(self, account_id: int, keyed: str, tries: int) -> bool:
        ok = self.on_record.get(account_id) == keyed
        self.attempts.append((account_id, keyed, tries, ok))
        return ok


@dataclass
class FakePromises:
    stored: list[tuple[int, dt.date]] = field(default_factory=list)
    works: bool = True

    async def today(self) -> dt.date:
        return TODAY

    async def store(self, amount_cents: int, date: dt.date) -> bool:
        if self.works:
            self.stored.append((amount_cents, date))
        return self.works


@dataclass
class Run:
    call: FakeCall
    journal: FakeJournal
    ledger: FakeLedger
    verifier: FakeVerifier
    promises: FakePromises
    note: str

    def heard(self) -> list[str]:
        return [token for _, tokens in self.call.prompts for token in tokens]


async def run(
    caller: str | None,
    script: list[Any],
    verifier: FakeVerifier | None = None,
    promises: FakePromises | None = None,
    **cfg: Any,
) -> Run:
    call = FakeCall(caller, script)
    journal, ledger = FakeJournal(), make_ledger()
    verifier = verifier or FakeVerifier()
    promises = promises or FakePromises()
    config = IvrConfig(recording_notice=False, collector_disclosure=False, **cfg)
    flow = InboundFlow(call, ledger, journal, config, verifier=verifier, promises=promises)
    record = await flow.run()
    assert call.remaining == [], "the flow stopped before the script was used up"
    assert journal.finished[2] == summarise(record)
    return Run(call, journal, ledger, verifier, promises, journal.finished[2])


def assert_nothing_disclosed(run: Run) -> None:
    heard = run.heard()
    assert not DISCLOSING & set(heard), heard
    assert not [c for c in run.ledger.calls if c[0] in ("balance", "last_invoice", "last_payment")]
    said = [d["option"] for kind, d in run.journal.events if kind == "said"]
    assert set(said) <= {"agent"}, said


async def test_verified_caller_hears_the_balance() -> None:
    r = await run(ONE_PHONE, ["10001", "1", HANGUP])
    assert r.call.gathers[0] == (["verify_zip_code"], 5)
    assert r.call.gathers[1] == (["menu"], 1)
    heard = r.heard()
    start = heard.index("balance_open")
    assert heard[start : start + len(NW_BALANCE_TOKENS)] == NW_BALANCE_TOKENS
    assert "Caller verified by postal code." in r.note
    assert ("verify", {"result": "verified", "kind": "postal_code", "try": 1}) in r.journal.events


async def test_verification_keys_never_reach_the_journal() -> None:
    r = await run(ONE_PHONE, ["99999", "10001", HANGUP])
    keys = [d for kind, d in r.journal.events if kind == "keys"]
    assert keys[:2] == [{"digits": "*****", "secret": True}] * 2
    assert "10001" not in repr(r.journal.events) and "99999" not in repr(r.journal.events)


async def test_three_wrong_postal_codes_disclose_nothing() -> None:
    r = await run(ONE_PHONE, ["11111", "22222", "33333", "1", "2", "3"])
    assert_nothing_disclosed(r)
    assert [a[3] for a in r.verifier.attempts] == [False, False, False]
    assert r.heard().count("verify_wrong") == 2 and "verify_failed" in r.heard()
    # 1, 2 and 3 are not on the unverified menu: each is an invalid choice.
    assert [g[0][-1] for g in r.call.gathers[3:]] == ["menu_unverified"] * 3
    assert r.heard()[-1] == "too_many_failures"
    assert "Caller not verified: 3 wrong postal codes in 3 tries" in r.note


async def test_unknown_number_keying_an_account_number_hears_nothing_about_it() -> None:
    verifier = FakeVerifier(on_record={4: "94105"})
    r = await run(UNKNOWN_PHONE, ["30003#", "", "", "", "1", HANGUP], verifier=verifier)
    assert r.call.gathers[0] == (["enter_account"], 12)
    assert_nothing_disclosed(r)
    assert "Account 30003 identified by account number on keypad." in r.note
    assert "verify_failed" in r.heard() and r.verifier.attempts == []  # silence is no guess


async def test_no_value_on_file_never_discloses() -> None:
    r = await run(ONE_PHONE, ["1", HANGUP], verifier=FakeVerifier(on_record={}))
    assert_nothing_disclosed(r)
    assert r.heard()[:2] == ["greeting", "verify_unavailable"]
    assert "no postal code on file" in r.note


async def test_locked_out_number_gets_no_try_and_is_told_so() -> None:
    until = dt.datetime(2026, 12, 3, 15, 0, tzinfo=dt.UTC)
    r = await run(ONE_PHONE, ["1", HANGUP], verifier=FakeVerifier(locked=until))
    assert_nothing_disclosed(r)
    assert "verify_locked" in r.heard() and r.verifier.attempts == []
    assert "locked until 2026-12-03 15:00 UTC" in r.note


async def test_the_agent_stays_reachable_unverified() -> None:
    r = await run(ONE_PHONE, ["1", "2", "3", "0", HANGUP])
    assert_nothing_disclosed(r)
    assert ("choice", {"key": "0", "option": "agent"}) in r.journal.events


async def test_second_try_verifies_and_the_note_says_which() -> None:
    r = await run(ONE_PHONE, ["12345", "10001", HANGUP])
    assert "Caller verified by postal code (try 2 of 3)." in r.note


async def test_date_of_birth_is_asked_when_configured() -> None:
    verifier = FakeVerifier(
        on_record={1: "07041976"}, kind="date_of_birth", prompt="verify_date_of_birth",
        max_digits=8,
    )  # fmt: skip
    r = await run(ONE_PHONE, ["07041976", HANGUP], verifier=verifier, verify="date_of_birth")
    assert r.call.gathers[0] == (["verify_date_of_birth"], 8)
    assert "Caller verified by date of birth." in r.note


async def test_verifying_without_a_verifier_fails_closed() -> None:
    call, journal = FakeCall(ONE_PHONE, ["1", HANGUP]), FakeJournal()
    ledger = make_ledger()
    cfg = IvrConfig(recording_notice=False, collector_disclosure=False)
    await InboundFlow(call, ledger, journal, cfg).run()
    assert ledger.calls == [("accounts_for_phone", ONE_PHONE)]


# -- promise to pay by keypad ------------------------------------------------------------


NEXT_WEEK = TODAY + dt.timedelta(days=7)


def mmddyyyy(d: dt.date) -> str:
    return d.strftime("%m%d%Y")


async def test_keypad_promise_is_read_back_and_stored_once() -> None:
    r = await run(ONE_PHONE, ["10001", "4", "50000#", mmddyyyy(NEXT_WEEK), "1", HANGUP])
    assert r.promises.stored == [(50000, NEXT_WEEK)]
    readback = r.call.gathers[4][0]
    assert readback == [
        "promise_readback", *say.money(50000, "USD"), "promise_on", *say.date(NEXT_WEEK),
        "promise_confirm",
    ]  # fmt: skip
    assert "promise_saved" in r.heard()
    assert f"promise to pay 500.00 USD by {NEXT_WEEK.isoformat()}" in r.note


@pytest.mark.parametrize(
    ("amount", "date", "problem"),
    [
        ("0#", None, "promise_amount_zero"),
        (f"{NW_BALANCE.open_cents + 1}#", None, "promise_amount_too_high"),
        ("#", None, "no_input"),
        ("50000#", mmddyyyy(TODAY - dt.timedelta(days=1)), "promise_date_past"),
        ("50000#", mmddyyyy(TODAY + dt.timedelta(days=31)), "promise_date_too_far"),
        ("50000#", "13322026", "promise_date_invalid"),
        ("50000#", "0230202", "promise_date_invalid"),  # 7 digits, then the timeout
    ],
)
async def test_bad_promise_input_is_said_asked_again_never_stored(
    amount: str, date: str | None, problem: str
) -> None:
    first = [amount] if date is None else [amount, date]
    script = ["10001", "4", *first, "50000#", mmddyyyy(NEXT_WEEK), "1", HANGUP]
    r = await run(ONE_PHONE, script)
    assert problem in r.heard()
    assert r.promises.stored == [(50000, NEXT_WEEK)]  # only the good one, once


async def test_a_promise_not_confirmed_is_not_stored() -> None:
    r = await run(ONE_PHONE, ["10001", "4", "50000#", mmddyyyy(NEXT_WEEK), "2",
                              "50000#", mmddyyyy(NEXT_WEEK), "9",
                              "50000#", mmddyyyy(NEXT_WEEK), "", HANGUP])  # fmt: skip
    assert r.promises.stored == []
    assert "promise_not_saved" in r.heard()
    assert "promise to pay: not completed" in r.note


async def test_a_promise_the_database_refused_is_said_not_recorded() -> None:
    r = await run(
        ONE_PHONE, ["10001", "4", "50000#", mmddyyyy(NEXT_WEEK), "1", HANGUP],
        promises=FakePromises(works=False),
    )  # fmt: skip
    assert "promise_not_saved" in r.heard() and "promise_saved" not in r.heard()


async def test_promise_needs_verification() -> None:
    r = await run(ONE_PHONE, ["11111", "11111", "11111", "4", HANGUP])
    assert r.promises.stored == [] and "promise_amount" not in r.heard()


def test_promise_parsers() -> None:
    assert parse_amount("50000") == 50000 and parse_amount("") is None
    assert parse_amount("1" * 13) is None and parse_amount("5*0") is None
    assert parse_date("12102026") == dt.date(2026, 12, 10)
    assert parse_date("02302026") is None and parse_date("1210202") is None
    assert amount_problem(None, 10) == "promise_amount_invalid"
    assert amount_problem(10, 10) is None and amount_problem(11, 10) == "promise_amount_too_high"
    assert date_problem(TODAY, TODAY, 30) is None
    assert date_problem(TODAY + dt.timedelta(days=30), TODAY, 30) is None
    assert date_problem(TODAY + dt.timedelta(days=31), TODAY, 30) == "promise_date_too_far"


def test_every_new_prompt_exists() -> None:
    keys = {"menu_unverified", "verify_zip_code", "verify_postal_code", "verify_date_of_birth",
            "verify_wrong", "verify_failed", "verify_locked", "verify_unavailable",
            "promise_amount", "promise_date", "promise_readback", "promise_confirm",
            "promise_saved", "promise_not_saved", "promise_days"}  # fmt: skip
    assert keys <= PROMPTS.keys()
    assert NORTHWIND.number == "10042"
