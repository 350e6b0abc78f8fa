"""The inbound IVR flow over a scripted caller, an in-memory ledger and a recording journal."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from typing import Any

import pytest
from fakes import (
    HANGUP,
    FakeCall,
    FakeJournal,
    FakeLedger,
    GatherCall,
    Said,
    ScriptExhausted,
    collect,
)

from accounts.views import AccountSummary, Balance, InvoiceSummary, PaymentSummary
from voice.config import IvrConfig
from voice.ivr import say
from voice.ivr.call import Call, HangUp
from voice.ivr.inbound import (
    MENU,
    SPOKEN_MENU,
    CallRecord,
    Handoff,
    InboundFlow,
    balance_answer,
    invoice_answer,
    money_text,
    payment_answer,
    summarise,
)
from voice.ivr.prompts import PROMPTS

ONE_PHONE = "+12125550101"
TWO_PHONE = "+12125550102"
UNKNOWN_PHONE = "+15555550199"

NORTHWIND = AccountSummary(1, "10042", "Northwind Traders", "USD", 7)
FAB_A = AccountSummary(2, "20001", "Fabrikam Inc", "USD", 8)
FAB_B = AccountSummary(3, "20002", "Fabrikam Inc", "USD", 8)
TAILSPIN = AccountSummary(4, "30003", "Tailspin Toys", "USD", None)

NW_BALANCE = Balance(173000, 125000, "USD")
NW_INVOICE = InvoiceSummary(
    number="INV-1001",
    issue_date=dt.date(2024, 4, 16),
    due_date=dt.date(2024, 5, 16),
    amount_cents=125000,
    open_cents=125000,
    currency="USD",
)
NW_PAYMENT = PaymentSummary(dt.date(2024, 3, 12), 60000, "CHK-5001", "USD")


def menu_cfg(**values: Any) -> IvrConfig:
    """These tests are about the menu after identification: right-party verification is off
    here (ivr.verify = "none"); tests/unit/test_verify_flow.py covers it."""
    return IvrConfig(**{"verify": "none", **values})


NOTICES = (["recording_notice", "collector_disclosure"], False)
GREETING = (["greeting"], True)
MENU_PROMPT = (["menu"], 1)

# The exact spoken answers for Northwind, from say's own functions ...
NW_BALANCE_TOKENS = [
    "balance_open",
    *say.money(173000, "USD"),
    "balance_past_due",
    *say.money(125000, "USD"),
]
NW_BALANCE_TEXT = "open 1,730.00 USD, past due 1,250.00 USD"
NW_INVOICE_TOKENS = [
    "invoice_number",
    *say.digits("INV-1001"),
    "invoice_amount",
    *say.money(125000, "USD"),
    "invoice_due",
    *say.date(dt.date(2024, 5, 16)),
]
NW_INVOICE_TEXT = "invoice INV-1001, 1,250.00 USD, due 2024-05-16"
NW_PAYMENT_TOKENS = [
    "payment_amount",
    *say.money(60000, "USD"),
    "payment_date",
    *say.date(dt.date(2024, 3, 12)),
]
NW_PAYMENT_TEXT = "600.00 USD on 2024-03-12"


def test_expected_answer_tokens_are_what_say_speaks() -> None:
    # ... pinned here once, so a change in say can't silently change what these tests expect.
    assert say.money(173000, "USD") == ["one", "thousand", "seven", "hundred", "thirty", "dollars"]
    assert say.money(125000, "USD") == ["one", "thousand", "two", "hundred", "fifty", "dollars"]
    assert say.money(60000, "USD") == ["six", "hundred", "dollars"]
    assert say.digits("INV-1001") == [
        *["letter_i", "letter_n", "letter_v", "pause", "one", "zero", "zero", "one"]
    ]
    assert say.date(dt.date(2024, 5, 16)) == ["may", "sixteenth", "twenty", "twenty", "four"]
    assert say.date(dt.date(2024, 3, 12)) == ["march", "twelfth", "twenty", "twenty", "four"]
    assert len(NW_BALANCE_TOKENS) == 14
    assert len(NW_INVOICE_TOKENS) == 22


def test_every_prompt_key_the_flow_speaks_exists() -> None:
    keys = {
        "recording_notice", "collector_disclosure", "greeting", "which_account",
        "enter_account", "account_not_found", "identify_failed", "menu", "invalid_choice",
        "no_input", "too_many_failures", "balance_open", "balance_past_due", "balance_none",
        "nothing_past_due", "invoice_number", "invoice_amount", "invoice_due", "invoice_none",
        "payment_amount", "payment_date", "payment_none", "agent_unavailable",
    }  # fmt: skip
    assert keys - PROMPTS.keys() == set()
    assert MENU == {
        "1": "balance",
        "2": "last_invoice",
        "3": "last_payment",
        "4": "promise",
        "0": "agent",
        "*": "repeat",
    }


def make_ledger(**overrides: Any) -> FakeLedger:
    values: dict[str, Any] = {
        "accounts": [NORTHWIND, FAB_A, FAB_B, TAILSPIN],
        "phones": {ONE_PHONE: ["10042"], TWO_PHONE: ["20001", "20002"]},
        "balances": {1: NW_BALANCE},
        "invoices": {1: NW_INVOICE},
        "payments": {1: NW_PAYMENT},
    }
    values.update(overrides)
    return FakeLedger(**values)


@dataclasses.dataclass
class Run:
    record: CallRecord
    call: FakeCall
    journal: FakeJournal
    ledger: FakeLedger

    @property
    def status(self) -> str:
        return self.journal.finished[0]

    @property
    def end_reason(self) -> str:
        return self.journal.finished[1]

    @property
    def summary(self) -> str:
        return self.journal.finished[2]

    def played_after_greeting(self) -> list[tuple[list[str], bool]]:
        index = self.call.plays.index(GREETING)
        return self.call.plays[index + 1 :]


async def run_flow(
    caller: str | None,
    script: list[Any],
    *,
    cfg: IvrConfig | None = None,
    ledger: FakeLedger | None = None,
    agent: Any = None,
    hangup_on_play: str | None = None,
) -> Run:
    call = FakeCall(caller, script, hangup_on_play=hangup_on_play)
    journal = FakeJournal()
    ledger = ledger or make_ledger()
    record = await InboundFlow(call, ledger, journal, cfg or menu_cfg(), agent).run()
    assert call.remaining == [], "the flow stopped before the script was used up"
    # One note, always, and it is the summary of what the flow returned.
    assert journal.finished == (record.status, record.end_reason, summarise(record))
    return Run(record, call, journal, ledger)


# -- the fake itself ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "max_digits", "expected"),
    [
        ("10042#", 12, "10042"),
        ("10042", 12, "10042"),
        ("123456", 4, "1234"),
        ("#", 12, ""),
        ("", 1, ""),
        ("12", 1, "1"),
        ("*", 1, "*"),
        ("12#34", 12, "12"),
    ],
)
def test_fake_collect_honours_max_digits_and_terminator(
    keys: str, max_digits: int, expected: str
) -> None:
    assert collect(keys, max_digits=max_digits) == expected


async def test_fake_call_hangup_sentinel_sticks() -> None:
    call = FakeCall("x", ["5", HANGUP, "1"])
    assert await call.gather(["a"]) == "5"
    with pytest.raises(HangUp):
        await call.gather(["b"], max_digits=3)
    with pytest.raises(HangUp):
        await call.play(["c"])
    with pytest.raises(HangUp):
        await call.gather(["d"])
    assert call.remaining == ["1"]
    assert call.gathers == [(["a"], 1), (["b"], 3), (["d"], 1)]
    assert call.plays == [(["c"], True)]
    assert call.prompts == [
        ("gather", ["a"]),
        ("gather", ["b"]),
        ("play", ["c"]),
        ("gather", ["d"]),
    ]


async def test_fake_call_hangup_on_play_token() -> None:
    call = FakeCall(None, ["1"], hangup_on_play="menu")
    await call.play(["greeting"], barge_in=False)
    with pytest.raises(HangUp):
        await call.gather(["no_input", "menu"])
    with pytest.raises(HangUp):
        await call.play(["greeting"])
    assert call.caller is None
    assert call.remaining == ["1"]
    assert call.plays == [(["greeting"], False), (["greeting"], True)]


async def test_fake_call_refuses_to_invent_input() -> None:
    call = FakeCall("x", [])
    with pytest.raises(ScriptExhausted):
        await call.gather(["menu"])
    with pytest.raises(ValueError, match="neither keys"):
        FakeCall("x", ["1x"])


async def test_fake_journal_rejects_a_second_finish() -> None:
    journal = FakeJournal()
    await journal.finish("completed", "done", "note")
    with pytest.raises(AssertionError, match="twice"):
        await journal.finish("completed", "done", "note")
    assert journal.finished == ("completed", "done", "note")


async def test_fake_ledger_matches_exact_caller_strings() -> None:
    ledger = make_ledger()
    assert await ledger.accounts_for_phone(TWO_PHONE) == [FAB_A, FAB_B]
    assert await ledger.accounts_for_phone("12125550102") == []
    assert await ledger.accounts_for_phone(None) == []
    assert await ledger.account_by_number("30003") == TAILSPIN
    assert await ledger.account_by_number("3000") is None


# -- notices and greeting -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recording", "disclosure", "notices"),
    [
        (True, True, [NOTICES]),
        (True, False, [(["recording_notice"], False)]),
        (False, True, [(["collector_disclosure"], False)]),
        (False, False, []),
    ],
)
async def test_notices_are_heard_whole_then_greeting(
    recording: bool, disclosure: bool, notices: list[tuple[list[str], bool]]
) -> None:
    cfg = menu_cfg(recording_notice=recording, collector_disclosure=disclosure)
    run = await run_flow(ONE_PHONE, [HANGUP], cfg=cfg)
    assert run.call.plays == [*notices, GREETING]
    # Notices come before anything else, the ledger lookup included.
    assert run.call.prompts[0] == ("play", notices[0][0] if notices else ["greeting"])


# -- identification -------------------------------------------------------------------------


async def test_single_caller_id_match_goes_straight_to_menu() -> None:
    run = await run_flow(ONE_PHONE, [HANGUP])
    assert run.call.gathers == [MENU_PROMPT]
    assert run.journal.identifications == [(NORTHWIND, "caller ID")]
    assert run.record.account == NORTHWIND
    assert run.record.identified_by == "caller ID"
    assert run.ledger.calls == [("accounts_for_phone", ONE_PHONE)]
    assert run.call.gather_calls == [GatherCall(["menu"], 1, 6.0, 4.0, "#")]


async def test_several_matches_pick_by_last_four() -> None:
    run = await run_flow(TWO_PHONE, ["0002", HANGUP])
    assert run.call.gathers == [(["which_account"], 4), MENU_PROMPT]
    assert run.journal.identifications == [(FAB_B, "caller ID and last 4 digits")]
    assert run.call.gather_calls[0] == GatherCall(["which_account"], 4, 4.0, 4.0, "#")
    assert (["account_not_found"], True) not in run.call.plays


async def test_last_four_wrong_then_right() -> None:
    run = await run_flow(TWO_PHONE, ["9999", "0001", HANGUP])
    assert run.call.gathers == [(["which_account"], 4), (["which_account"], 4), MENU_PROMPT]
    assert run.played_after_greeting() == [(["account_not_found"], True)]
    assert run.journal.identifications == [(FAB_A, "caller ID and last 4 digits")]


@pytest.mark.parametrize("keys", ["2", "002", "", "#"])
async def test_last_four_needs_exactly_four_digits(keys: str) -> None:
    # "2" is a suffix of 20002 only, but fewer than four digits never pick an account.
    run = await run_flow(TWO_PHONE, [keys, "0002", HANGUP])
    assert run.played_after_greeting() == [(["account_not_found"], True)]
    assert run.journal.identifications == [(FAB_B, "caller ID and last 4 digits")]


async def test_last_four_ignores_separators_in_stored_numbers() -> None:
    a = AccountSummary(10, "7700-01", "Contoso", "USD", None)
    b = AccountSummary(11, "77 00 02", "Contoso", "USD", None)
    ledger = make_ledger(accounts=[a, b], phones={TWO_PHONE: ["7700-01", "77 00 02"]})
    run = await run_flow(TWO_PHONE, ["0002", HANGUP], ledger=ledger)
    assert run.journal.identifications == [(b, "caller ID and last 4 digits")]


async def test_last_four_shared_by_two_accounts_is_not_a_choice() -> None:
    a = AccountSummary(10, "10001", "Contoso", "USD", None)
    b = AccountSummary(11, "20001", "Contoso", "USD", None)
    ledger = make_ledger(accounts=[a, b], phones={TWO_PHONE: ["10001", "20001"]})
    run = await run_flow(TWO_PHONE, ["0001", "0001", "0001"], ledger=ledger)
    assert run.record.account is None
    assert run.end_reason == "account not identified"


async def test_last_four_three_failures_end_the_call() -> None:
    run = await run_flow(TWO_PHONE, ["1234", "", "9999"])
    assert run.call.gathers == [(["which_account"], 4)] * 3
    assert run.played_after_greeting() == [
        (["account_not_found"], True),
        (["account_not_found"], True),
        (["account_not_found"], True),
        (["identify_failed"], False),
    ]
    assert run.call.hangups == 1
    assert run.journal.identifications == []
    assert (run.status, run.end_reason) == ("completed", "account not identified")
    assert run.record.account is None


async def test_identify_tries_follow_config() -> None:
    cfg = menu_cfg(account_number_tries=1)
    run = await run_flow(TWO_PHONE, ["1234"], cfg=cfg)
    assert run.call.gathers == [(["which_account"], 4)]
    assert run.call.plays[-1] == (["identify_failed"], False)
    assert run.call.hangups == 1


@pytest.mark.parametrize("caller", [None, UNKNOWN_PHONE])
async def test_no_match_asks_for_account_number(caller: str | None) -> None:
    run = await run_flow(caller, ["10042#", HANGUP])
    assert run.call.gathers == [(["enter_account"], 12), MENU_PROMPT]
    assert run.call.gather_calls[0] == GatherCall(["enter_account"], 12, 4.0, 4.0, "#")
    assert run.journal.identifications == [(NORTHWIND, "account number on keypad")]
    assert run.ledger.calls == [
        ("accounts_for_phone", caller),
        ("account_by_number", "10042"),
    ]
    assert run.journal.events[0:2] == [
        ("prompt", {"tokens": ["recording_notice", "collector_disclosure"]}),
        ("prompt", {"tokens": ["greeting"]}),
    ]
    assert run.journal.events[2] == ("lookup", {"by": "caller_id", "matches": 0})


async def test_account_number_found_on_third_try() -> None:
    run = await run_flow(None, ["555#", "", "30003#", HANGUP])
    assert run.call.gathers == [(["enter_account"], 12)] * 3 + [MENU_PROMPT]
    assert run.played_after_greeting() == [
        (["account_not_found"], True),
        (["account_not_found"], True),
    ]
    # Silence is a failed try, but never a ledger lookup.
    assert run.ledger.calls == [
        ("accounts_for_phone", None),
        ("account_by_number", "555"),
        ("account_by_number", "30003"),
    ]
    assert run.journal.identifications == [(TAILSPIN, "account number on keypad")]


async def test_account_number_respects_max_digits() -> None:
    cfg = menu_cfg(account_number_max_digits=5)
    run = await run_flow(None, ["100429999", HANGUP], cfg=cfg)
    assert run.call.gathers[0] == (["enter_account"], 5)
    assert run.ledger.calls[1] == ("account_by_number", "10042")
    assert run.record.account == NORTHWIND


async def test_account_number_never_found() -> None:
    run = await run_flow(None, ["1#", "2#", "#"])
    assert run.played_after_greeting() == [
        (["account_not_found"], True),
        (["account_not_found"], True),
        (["account_not_found"], True),
        (["identify_failed"], False),
    ]
    assert run.call.hangups == 1
    assert run.journal.finished == (
        "completed",
        "account not identified",
        "Inbound IVR call from a withheld number.\n"
        "Account not identified.\n"
        "No menu actions.\n"
        "Ended: account not identified.",
    )


# -- menu answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "option", "tokens", "text"),
    [
        ("1", "balance", NW_BALANCE_TOKENS, NW_BALANCE_TEXT),
        ("2", "last_invoice", NW_INVOICE_TOKENS, NW_INVOICE_TEXT),
        ("3", "last_payment", NW_PAYMENT_TOKENS, NW_PAYMENT_TEXT),
    ],
)
async def test_menu_answers(key: str, option: str, tokens: list[str], text: str) -> None:
    run = await run_flow(ONE_PHONE, [key, HANGUP])
    assert run.played_after_greeting() == [(tokens, True)]
    assert run.call.gathers == [MENU_PROMPT, MENU_PROMPT]
    assert ("choice", {"key": key, "option": option}) in run.journal.events
    assert ("said", {"option": option, "text": text}) in run.journal.events
    assert run.record.actions == [f"{option.replace('_', ' ')}: {text}"]


@pytest.mark.parametrize(
    ("ledger", "key", "tokens", "action"),
    [
        (
            make_ledger(balances={1: Balance(32000, 0, "USD")}),
            "1",
            ["balance_open", *say.money(32000, "USD"), "nothing_past_due"],
            "balance: open 320.00 USD, nothing past due",
        ),
        (
            make_ledger(balances={1: Balance(0, 0, "USD")}),
            "1",
            ["balance_none"],
            "balance: no open balance",
        ),
        (make_ledger(invoices={}), "2", ["invoice_none"], "last invoice: no invoices"),
        (make_ledger(payments={}), "3", ["payment_none"], "last payment: no payments"),
    ],
)
async def test_menu_answer_variants(
    ledger: FakeLedger, key: str, tokens: list[str], action: str
) -> None:
    run = await run_flow(ONE_PHONE, [key, HANGUP], ledger=ledger)
    assert run.played_after_greeting() == [(tokens, True)]
    assert run.record.actions == [action]


async def test_answers_use_the_identified_account() -> None:
    ledger = make_ledger(
        balances={1: NW_BALANCE, 3: Balance(32000, 0, "USD")},
    )
    run = await run_flow(TWO_PHONE, ["0002", "1", "2", "3", HANGUP], ledger=ledger)
    assert run.ledger.calls[1:] == [("balance", 3), ("last_invoice", 3), ("last_payment", 3)]
    assert run.record.actions == [
        "balance: open 320.00 USD, nothing past due",
        "last invoice: no invoices",
        "last payment: no payments",
    ]


async def test_agent_without_handoff_is_unavailable_and_back_to_menu() -> None:
    run = await run_flow(ONE_PHONE, ["0", "1", HANGUP])
    assert run.played_after_greeting() == [
        (["agent_unavailable"], True),
        (NW_BALANCE_TOKENS, True),
    ]
    assert run.call.gathers == [MENU_PROMPT] * 3
    assert ("said", {"option": "agent", "text": "nobody available"}) in run.journal.events
    assert run.record.actions == ["agent: nobody available", f"balance: {NW_BALANCE_TEXT}"]


@pytest.mark.parametrize("outcome", ["connected", "voicemail", "unavailable"])
async def test_agent_handoff(outcome: str) -> None:
    handed: list[tuple[Call, AccountSummary]] = []

    async def agent(call: Call, account: AccountSummary) -> Handoff:
        handed.append((call, account))
        return Handoff(outcome, f"{outcome} text")

    script = ["0", HANGUP] if outcome == "unavailable" else ["0"]
    run = await run_flow(ONE_PHONE, script, agent=agent)
    assert handed == [(run.call, NORTHWIND)]
    assert ("agent", {"outcome": outcome, "text": f"{outcome} text"}) in run.journal.events
    assert run.record.actions == [f"agent: {outcome} text"]
    if outcome == "connected":  # the call ends with the agent call: no menu again
        assert run.call.gathers == [MENU_PROMPT]
        assert run.played_after_greeting() == []
        assert run.record.end_reason == "agent call ended"
        assert run.call.hangups == 1
    elif outcome == "voicemail":
        assert run.call.gathers == [MENU_PROMPT]
        assert run.played_after_greeting() == [(["voicemail_thanks"], False)]
        assert run.record.end_reason == "voicemail left"
        assert run.call.hangups == 1
    else:
        assert run.call.gathers == [MENU_PROMPT, MENU_PROMPT]
        assert run.played_after_greeting() == [(["agent_unavailable"], True)]


async def test_agent_handoff_caller_gone_during_transfer_ends_the_flow() -> None:
    async def agent(call: Call, account: AccountSummary) -> Handoff:
        return Handoff("unavailable", "nobody available; no message left", "caller hung up")

    run = await run_flow(ONE_PHONE, ["0"], agent=agent)
    assert run.record.end_reason == "caller hung up"
    assert run.call.gathers == [MENU_PROMPT]


async def test_star_repeats_the_menu() -> None:
    run = await run_flow(ONE_PHONE, ["*", HANGUP])
    assert run.call.gathers == [MENU_PROMPT, MENU_PROMPT]
    assert run.played_after_greeting() == []
    assert ("choice", {"key": "*", "option": "repeat"}) in run.journal.events
    assert run.record.actions == []
    assert run.ledger.calls == [("accounts_for_phone", ONE_PHONE)]


async def test_invalid_key_and_silence_reprompt() -> None:
    run = await run_flow(ONE_PHONE, ["7", "", HANGUP])
    assert run.call.gathers == [
        MENU_PROMPT,
        (["invalid_choice", "menu"], 1),
        (["no_input", "menu"], 1),
    ]
    assert run.call.gather_calls[1].timeout == 6.0
    assert [e for e in run.journal.events if e[0] in ("invalid_choice", "no_input")] == [
        ("invalid_choice", {"key": "7"}),
        ("no_input", {"key": ""}),
    ]
    assert run.record.actions == ["invalid key 7", "no input"]
    assert run.call.hangups == 0


async def test_spoken_menu_choice_answers_like_its_key() -> None:
    run = await run_flow(ONE_PHONE, [Said("잔액", "balance", 0.93), HANGUP])
    assert run.call.spoken == [SPOKEN_MENU, SPOKEN_MENU]  # every menu gather takes speech
    assert run.played_after_greeting() == [(NW_BALANCE_TOKENS, True)]
    assert ("speech", {"text": "잔액", "option": "balance", "confidence": 0.93}) in (
        run.journal.events
    )
    assert ("choice", {"said": "잔액", "option": "balance"}) in run.journal.events
    assert run.record.actions == ["said '잔액'", f"balance: {NW_BALANCE_TEXT}"]
    assert "Caller actions: said '잔액'; balance: " in run.summary


def test_spoken_menu_names_every_option_by_its_key() -> None:
    assert {key: option for option, key in SPOKEN_MENU.items()} == MENU


async def test_speech_naming_nothing_reprompts_without_a_choice() -> None:
    run = await run_flow(ONE_PHONE, [Said("오늘 날씨가 좋네요", None), "3", HANGUP])
    assert run.call.gathers == [
        MENU_PROMPT,
        (["not_understood", "menu"], 1),
        MENU_PROMPT,
    ]
    assert ("not_understood", {"key": ""}) in run.journal.events
    assert not [e for e in run.journal.events if e[0] == "choice" and "said" in e[1]]
    assert run.record.actions[0] == "said '오늘 날씨가 좋네요': not understood"
    assert run.record.actions[1] == f"last payment: {NW_PAYMENT_TEXT}"


async def test_account_number_gathers_take_no_speech() -> None:
    run = await run_flow(UNKNOWN_PHONE, ["10042#", HANGUP])
    assert run.call.spoken == [None, SPOKEN_MENU]


async def test_terminator_alone_at_the_menu_is_silence() -> None:
    run = await run_flow(ONE_PHONE, ["#", HANGUP])
    assert run.call.gathers == [MENU_PROMPT, (["no_input", "menu"], 1)]


async def test_three_failures_end_the_call() -> None:
    run = await run_flow(ONE_PHONE, ["7", "", "9"])
    assert run.call.gathers == [
        MENU_PROMPT,
        (["invalid_choice", "menu"], 1),
        (["no_input", "menu"], 1),
    ]
    assert run.played_after_greeting() == [(["too_many_failures"], False)]
    assert run.call.hangups == 1
    assert (run.status, run.end_reason) == ("completed", "3 failed menu attempts")
    assert run.record.actions == ["invalid key 7", "no input", "invalid key 9"]


async def test_max_failures_follows_config() -> None:
    run = await run_flow(ONE_PHONE, ["5"], cfg=menu_cfg(max_failures=1))
    assert run.call.gathers == [MENU_PROMPT]
    assert run.call.plays[-1] == (["too_many_failures"], False)
    assert run.end_reason == "1 failed menu attempts"


async def test_valid_choice_resets_the_failure_count() -> None:
    run = await run_flow(ONE_PHONE, ["7", "", "*", "8", "", HANGUP])
    assert run.call.gathers == [
        MENU_PROMPT,
        (["invalid_choice", "menu"], 1),
        (["no_input", "menu"], 1),
        MENU_PROMPT,
        (["invalid_choice", "menu"], 1),
        (["no_input", "menu"], 1),
    ]
    assert (["too_many_failures"], False) not in run.call.plays
    assert run.call.hangups == 0
    assert run.end_reason == "caller hung up"


# -- hang-ups -------------------------------------------------------------------------------


async def test_hangup_mid_menu_writes_one_note() -> None:
    run = await run_flow(ONE_PHONE, ["1", "3", HANGUP])
    assert run.call.hangups == 0
    assert run.journal.finished == (
        "completed",
        "caller hung up",
        f"Inbound IVR call from {ONE_PHONE}.\n"
        "Account 10042 identified by caller ID.\n"
        f"Caller actions: balance: {NW_BALANCE_TEXT}; last payment: {NW_PAYMENT_TEXT}.\n"
        "Ended: caller hung up.",
    )


async def test_hangup_during_an_answer_prompt() -> None:
    run = await run_flow(ONE_PHONE, ["2"], hangup_on_play="invoice_number")
    assert run.call.plays[-1] == (NW_INVOICE_TOKENS, True)
    assert run.call.gathers == [MENU_PROMPT]
    assert run.summary == (
        f"Inbound IVR call from {ONE_PHONE}.\n"
        "Account 10042 identified by caller ID.\n"
        f"Caller actions: last invoice: {NW_INVOICE_TEXT}.\n"
        "Ended: caller hung up."
    )


async def test_hangup_during_the_menu_prompt() -> None:
    run = await run_flow(TWO_PHONE, ["0001"], hangup_on_play="menu")
    assert run.call.gathers == [(["which_account"], 4), MENU_PROMPT]
    assert run.summary == (
        f"Inbound IVR call from {TWO_PHONE}.\n"
        "Account 20001 identified by caller ID and last 4 digits.\n"
        "No menu actions.\n"
        "Ended: caller hung up."
    )


async def test_hangup_during_notices_skips_everything_else() -> None:
    run = await run_flow(ONE_PHONE, [], hangup_on_play="collector_disclosure")
    assert run.call.plays == [NOTICES]
    assert run.ledger.calls == []
    assert run.journal.identifications == []
    assert run.summary == (
        f"Inbound IVR call from {ONE_PHONE}.\n"
        "Account not identified.\n"
        "No menu actions.\n"
        "Ended: caller hung up."
    )


async def test_hangup_while_identifying() -> None:
    run = await run_flow(None, ["1#", HANGUP])
    assert run.call.hangups == 0
    assert (run.status, run.end_reason) == ("completed", "caller hung up")
    assert run.record.account is None


async def test_hangup_during_goodbye() -> None:
    run = await run_flow(ONE_PHONE, ["7", "7", "7"], hangup_on_play="too_many_failures")
    assert run.call.plays[-1] == (["too_many_failures"], False)
    assert run.call.hangups == 0  # hangup() is never reached: the far end is already gone
    assert run.end_reason == "caller hung up"
    assert run.summary.endswith(
        "Caller actions: invalid key 7; invalid key 7; invalid key 7.\nEnded: caller hung up."
    )


# -- journal --------------------------------------------------------------------------------


async def test_journal_events_in_order() -> None:
    cfg = menu_cfg(recording_notice=False, collector_disclosure=False)
    run = await run_flow(
        TWO_PHONE,
        ["9", "0002", "2", "5", HANGUP],
        cfg=cfg,
        ledger=make_ledger(invoices={3: NW_INVOICE}),
    )
    assert run.journal.events == [
        ("prompt", {"tokens": ["greeting"]}),
        ("lookup", {"by": "caller_id", "matches": 2}),
        ("prompt", {"tokens": ["which_account"]}),
        ("keys", {"digits": "9"}),
        ("prompt", {"tokens": ["account_not_found"]}),
        ("prompt", {"tokens": ["which_account"]}),
        ("keys", {"digits": "0002"}),
        ("identified", {"account": "20002", "how": "caller ID and last 4 digits"}),
        ("prompt", {"tokens": ["menu"]}),
        ("keys", {"digits": "2"}),
        ("choice", {"key": "2", "option": "last_invoice"}),
        ("said", {"option": "last_invoice", "text": NW_INVOICE_TEXT}),
        ("prompt", {"tokens": NW_INVOICE_TOKENS}),
        ("prompt", {"tokens": ["menu"]}),
        ("keys", {"digits": "5"}),
        ("invalid_choice", {"key": "5"}),
        ("prompt", {"tokens": ["invalid_choice", "menu"]}),
    ]


# -- summary --------------------------------------------------------------------------------


def test_summarise_identified_call() -> None:
    record = CallRecord(
        caller="+12125550101",
        account=NORTHWIND,
        identified_by="caller ID",
        actions=["balance: no open balance", "no input"],
        end_reason="caller hung up",
    )
    assert summarise(record) == (
        "Inbound IVR call from +12125550101.\n"
        "Account 10042 identified by caller ID.\n"
        "Caller actions: balance: no open balance; no input.\n"
        "Ended: caller hung up."
    )


@pytest.mark.parametrize(
    ("caller", "heading"),
    [(None, "a withheld number"), ("", "a withheld number"), ("anonymous", "anonymous")],
)
def test_summarise_unidentified_call(caller: str | None, heading: str) -> None:
    record = CallRecord(caller=caller, end_reason="account not identified")
    assert summarise(record) == (
        f"Inbound IVR call from {heading}.\n"
        "Account not identified.\n"
        "No menu actions.\n"
        "Ended: account not identified."
    )


# -- interruption and errors ----------------------------------------------------------------


async def test_cancellation_marks_the_call_interrupted() -> None:
    started = asyncio.Event()

    async def agent(call: Call, account: AccountSummary) -> bool:
        started.set()
        await asyncio.Event().wait()
        return True  # pragma: no cover

    call = FakeCall(ONE_PHONE, ["1", "0"])
    journal = FakeJournal()
    flow = InboundFlow(call, make_ledger(), journal, menu_cfg(), agent)
    task = asyncio.create_task(flow.run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert journal.finished == (
        "interrupted",
        "server shutting down",
        f"Inbound IVR call from {ONE_PHONE}.\n"
        "Account 10042 identified by caller ID.\n"
        f"Caller actions: balance: {NW_BALANCE_TEXT}.\n"
        "Ended: server shutting down.",
    )
    assert (flow.record.status, flow.record.end_reason) == (
        "interrupted",
        "server shutting down",
    )


async def test_ledger_error_marks_the_call_failed() -> None:
    class BrokenLedger(FakeLedger):
        async def balance(self, account_id: int) -> Balance:
            raise RuntimeError("database is locked")

    call = FakeCall(ONE_PHONE, ["1"])
    journal = FakeJournal()
    flow = InboundFlow(call, BrokenLedger(**make_ledger().__dict__), journal, menu_cfg())
    with pytest.raises(RuntimeError, match="database is locked"):
        await flow.run()
    assert journal.finished[:2] == ("failed", "error: RuntimeError")
    assert journal.finished[2].endswith("No menu actions.\nEnded: error: RuntimeError.")


# -- answers as pure functions --------------------------------------------------------------


def test_balance_answer_variants() -> None:
    assert balance_answer(NW_BALANCE) == (NW_BALANCE_TOKENS, NW_BALANCE_TEXT)
    assert balance_answer(Balance(32000, 0, "USD")) == (
        ["balance_open", "three", "hundred", "twenty", "dollars", "nothing_past_due"],
        "open 320.00 USD, nothing past due",
    )
    assert balance_answer(Balance(0, 0, "EUR")) == (["balance_none"], "no open balance")
    assert balance_answer(Balance(123401, 123401, "EUR")) == (
        [
            "balance_open",
            *say.money(123401, "EUR"),
            "balance_past_due",
            *say.money(123401, "EUR"),
        ],
        "open 1,234.01 EUR, past due 1,234.01 EUR",
    )


def test_invoice_and_payment_answers() -> None:
    assert invoice_answer(NW_INVOICE) == (NW_INVOICE_TOKENS, NW_INVOICE_TEXT)
    assert invoice_answer(None) == (["invoice_none"], "no invoices")
    assert payment_answer(NW_PAYMENT) == (NW_PAYMENT_TOKENS, NW_PAYMENT_TEXT)
    assert payment_answer(None) == (["payment_none"], "no payments")


@pytest.mark.parametrize(
    ("cents", "currency", "text"),
    [
        (0, "USD", "0.00 USD"),
        (5, "USD", "0.05 USD"),
        (123456789, "GBP", "1,234,567.89 GBP"),
        (-2550, "USD", "-25.50 USD"),
    ],
)
def test_money_text(cents: int, currency: str, text: str) -> None:
    assert money_text(cents, currency) == text
