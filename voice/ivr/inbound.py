"""The inbound collections IVR: notices, identify the account, keypad menu, spoken answers.

Pure logic over three small interfaces (`Call`, `Ledger`, `Journal`), so it runs unchanged
against a fake call in unit tests and a pjsua2 call in production. Every step is journaled as a
call event, and the call's note is written in `finally`, so a hang-up mid-menu still leaves one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from accounts.money import money_text
from accounts.views import (
    AccountSummary,
    Balance,
    InvoiceSummary,
    PaymentSummary,
    keyed_number,
)
from voice.config import IvrConfig
from voice.ivr import say
from voice.ivr.call import Call, HangUp
from voice.ivr.promise import Promises, arrange_payment
from voice.ivr.steps import Steps
from voice.ivr.verify import NOT_REQUIRED, Verdict, Verifier, verify

__all__ = ["money_text"]  # re-exported: the answers' note text is formatted exactly

MENU: dict[str, str] = {
    "1": "balance",
    "2": "last_invoice",
    "3": "last_payment",
    "4": "promise",
    "0": "agent",
    "*": "repeat",
}
# A caller not verified as the right party hears nothing about the debt: only these.
UNVERIFIED_MENU: dict[str, str] = {"0": "agent", "*": "repeat"}
# The same choices by voice: option -> its key (phrases per language come from asr.phrases).
SPOKEN_MENU: dict[str, str] = {option: key for key, option in MENU.items()}
UNVERIFIED_SPOKEN_MENU: dict[str, str] = {option: key for key, option in UNVERIFIED_MENU.items()}


class Ledger(Protocol):
    async def accounts_for_phone(self, caller: str | None) -> list[AccountSummary]: ...
    async def account_by_number(self, number: str) -> AccountSummary | None: ...
    async def balance(self, account_id: int) -> Balance: ...
    async def last_invoice(self, account_id: int) -> InvoiceSummary | None: ...
    async def last_payment(self, account_id: int) -> PaymentSummary | None: ...


class Journal(Protocol):
    async def event(self, kind: str, detail: dict[str, Any]) -> None: ...
    async def identified(self, account: AccountSummary, how: str) -> None: ...
    async def finish(self, status: str, end_reason: str, summary: str) -> None: ...


@dataclass(frozen=True)
class Handoff:
    """How a transfer to an agent (menu 0) ended, as voice/ivr/transfer.py reports it."""

    outcome: str  # "connected" (bridged, now over), "voicemail" (a message left), "unavailable"
    text: str  # for the note: "connected to Dana Whitfield for 63 s", ...
    end_reason: str | None = None  # the call's end reason when the hand-off ended the call


# The hand-off point to the agent transfer (voice/ivr/transfer.py: AgentTransfer).
AgentHandoff = Callable[[Call, AccountSummary], Awaitable[Handoff]]


@dataclass
class CallRecord:
    """What happened on the call, kept by the flow to write the note."""

    caller: str | None  # the customer's number: who called us, or whom a worker called
    direction: str = "inbound"
    account: AccountSummary | None = None
    identified_by: str | None = None
    verification: str | None = None  # how the caller was (not) verified
    actions: list[str] = field(default_factory=list)
    end_reason: str = "completed"
    status: str = "completed"


class InboundFlow:
    def __init__(
        self,
        call: Call,
        ledger: Ledger,
        journal: Journal,
        cfg: IvrConfig,
        agent: AgentHandoff | None = None,
        direction: str = "inbound",
        verifier: Verifier | None = None,
        promises: Promises | None = None,
    ) -> None:
        self.call = call
        self.ledger = ledger
        self.journal = journal
        self.cfg = cfg
        self.agent = agent
        self.verifier = verifier  # required unless cfg.verify == "none": without it, no disclosure
        self.promises = promises
        self.steps = Steps(call, journal, cfg)
        self.record = CallRecord(caller=call.caller, direction=direction)

    async def run(self) -> CallRecord:
        try:
            await self._intro()
            account = await self._identify()
            if account is None:
                self.record.end_reason = "account not identified"
                await self.steps.farewell("identify_failed")
            else:
                verdict = await self._verify(account)
                await self._menu(account, verdict.verified)
        except HangUp:
            self.record.end_reason = "caller hung up"
        except asyncio.CancelledError:
            self.record.status, self.record.end_reason = "interrupted", "server shutting down"
            raise
        except Exception as exc:
            self.record.status, self.record.end_reason = "failed", f"error: {type(exc).__name__}"
            raise
        finally:
            await self.journal.finish(
                self.record.status, self.record.end_reason, summarise(self.record)
            )
        return self.record

    # -- steps --------------------------------------------------------------------------------

    async def _intro(self) -> None:
        notices = []
        if self.cfg.recording_notice:
            notices.append("recording_notice")
        if self.cfg.collector_disclosure:
            notices.append("collector_disclosure")
        if notices:  # compliance notices are heard whole: no barge-in
            await self.steps.play(notices, barge_in=False)
        await self.steps.play(["greeting"])

    async def _identify(self) -> AccountSummary | None:
        matches = await self.ledger.accounts_for_phone(self.call.caller)
        await self.journal.event("lookup", {"by": "caller_id", "matches": len(matches)})
        if len(matches) == 1:
            return await self._identified(matches[0], "caller ID")
        if len(matches) > 1:
            return await self._pick_by_last4(matches)
        return await self._ask_account_number()

    async def _pick_by_last4(self, matches: list[AccountSummary]) -> AccountSummary | None:
        for _ in range(self.cfg.account_number_tries):
            digits = await self.steps.gather(["which_account"], max_digits=4)
            chosen = [
                a for a in matches if len(digits) == 4 and keyed_number(a.number).endswith(digits)
            ]
            if len(chosen) == 1:
                return await self._identified(chosen[0], "caller ID and last 4 digits")
            await self.steps.play(["account_not_found"])
        return None

    async def _ask_account_number(self) -> AccountSummary | None:
        for _ in range(self.cfg.account_number_tries):
            digits = await self.steps.gather(
                ["enter_account"], max_digits=self.cfg.account_number_max_digits
            )
            account = await self.ledger.account_by_number(digits) if digits else None
            if account is not None:
                return await self._identified(account, "account number on keypad")
            await self.steps.play(["account_not_found"])
        return None

    async def _identified(self, account: AccountSummary, how: str) -> AccountSummary:
        self.record.account, self.record.identified_by = account, how
        await self.journal.identified(account, how)
        return account

    async def _verify(self, account: AccountSummary) -> Verdict:
        if self.cfg.verify == "none":
            verdict = NOT_REQUIRED
        elif self.verifier is None:
            verdict = Verdict(False, "not verified: no verifier on this call")
        else:
            verdict = await verify(self.steps, self.verifier, account, self.cfg.verify_tries)
        # With verification off the note stays as it always was; otherwise it says how.
        self.record.verification = None if verdict is NOT_REQUIRED else verdict.text
        return verdict

    async def _menu(self, account: AccountSummary, verified: bool) -> None:
        if verified:
            menu, spoken, menu_prompt = MENU, SPOKEN_MENU, "menu"
        else:
            menu, spoken, menu_prompt = UNVERIFIED_MENU, UNVERIFIED_SPOKEN_MENU, "menu_unverified"
        failures = 0
        prompt = [menu_prompt]
        while True:
            key = await self.steps.gather(
                prompt, max_digits=1, timeout=self.cfg.menu_timeout, spoken=spoken
            )
            option = menu.get(key)
            if option is None:
                failures += 1
                heard = self.call.heard
                if heard is not None:
                    reason, action = "not_understood", f"said {heard.text!r}: not understood"
                elif key == "":
                    reason, action = "no_input", "no input"
                else:
                    reason, action = "invalid_choice", f"invalid key {key}"
                await self.journal.event(reason, {"key": key})
                self.record.actions.append(action)
                if failures >= self.cfg.max_failures:
                    self.record.end_reason = f"{failures} failed menu attempts"
                    await self.steps.farewell("too_many_failures")
                    return
                prompt = [reason, menu_prompt]
                continue
            failures = 0
            heard = self.call.heard
            if heard is not None:
                self.record.actions.append(f"said {heard.text!r}")
                await self.journal.event("choice", {"said": heard.text, "option": option})
            else:
                await self.journal.event("choice", {"key": key, "option": option})
            prompt = [menu_prompt]
            if option == "agent":
                if await self._agent(account):
                    return
            elif option == "promise":
                await self._promise(account)
            elif option != "repeat":
                await self._answer(option, account)

    async def _agent(self, account: AccountSummary) -> bool:
        """Menu 0: the hand-off to a person; True when it ended the call."""
        if self.agent is None:
            await self._tell("agent", ["agent_unavailable"], "nobody available")
            return False
        await self.journal.event("said", {"option": "agent", "text": "transfer to an agent"})
        result = await self.agent(self.call, account)
        await self.journal.event("agent", {"outcome": result.outcome, "text": result.text})
        self.record.actions.append(f"agent: {result.text}")
        if result.outcome == "connected":
            self.record.end_reason = result.end_reason or "agent call ended"
            await self.call.hangup()
            return True
        if result.outcome == "voicemail":
            self.record.end_reason = result.end_reason or "voicemail left"
            await self.steps.farewell("voicemail_thanks")
            return True
        if result.end_reason == "caller hung up":
            raise HangUp()
        await self.steps.play(["agent_unavailable"])
        return False

    async def _promise(self, account: AccountSummary) -> None:
        if self.promises is None:
            await self._tell("promise", ["agent_unavailable"], "promise by keypad unavailable")
            return
        balance = await self.ledger.balance(account.id)
        text = await arrange_payment(self.steps, self.promises, account, balance.open_cents)
        self.record.actions.append(text)

    async def _answer(self, option: str, account: AccountSummary) -> None:
        tokens, text = await self._compose(option, account)
        await self._tell(option, tokens, text)

    async def _compose(self, option: str, account: AccountSummary) -> tuple[list[str], str]:
        if option == "balance":
            return balance_answer(await self.ledger.balance(account.id))
        if option == "last_invoice":
            return invoice_answer(await self.ledger.last_invoice(account.id))
        return payment_answer(await self.ledger.last_payment(account.id))

    async def _tell(self, option: str, tokens: list[str], text: str) -> None:
        await self.journal.event("said", {"option": option, "text": text})
        self.record.actions.append(f"{option.replace('_', ' ')}: {text}")
        await self.steps.play(tokens)


# -- answers: pure functions from ledger values to (tokens to speak, text for the note) --------


def balance_answer(balance: Balance) -> tuple[list[str], str]:
    if balance.open_cents == 0:
        return ["balance_none"], "no open balance"
    tokens = ["balance_open", *say.money(balance.open_cents, balance.currency)]
    text = f"open {money_text(balance.open_cents, balance.currency)}"
    if balance.past_due_cents:
        tokens += ["balance_past_due", *say.money(balance.past_due_cents, balance.currency)]
        return tokens, text + f", past due {money_text(balance.past_due_cents, balance.currency)}"
    return [*tokens, "nothing_past_due"], text + ", nothing past due"


def invoice_answer(invoice: InvoiceSummary | None) -> tuple[list[str], str]:
    if invoice is None:
        return ["invoice_none"], "no invoices"
    tokens = [
        "invoice_number",
        *say.digits(invoice.number),
        "invoice_amount",
        *say.money(invoice.amount_cents, invoice.currency),
        "invoice_due",
        *say.date(invoice.due_date),
    ]
    text = (
        f"invoice {invoice.number}, {money_text(invoice.amount_cents, invoice.currency)}, "
        f"due {invoice.due_date.isoformat()}"
    )
    return tokens, text


def payment_answer(payment: PaymentSummary | None) -> tuple[list[str], str]:
    if payment is None:
        return ["payment_none"], "no payments"
    tokens = [
        "payment_amount",
        *say.money(payment.amount_cents, payment.currency),
        "payment_date",
        *say.date(payment.date),
    ]
    text = f"{money_text(payment.amount_cents, payment.currency)} on {payment.date.isoformat()}"
    return tokens, text


def summarise(record: CallRecord) -> str:
    """The call note, written for a collector reading the account's history."""
    if record.direction == "outbound":
        lines = [f"Outbound IVR call to {record.caller or 'an unknown number'}."]
    else:
        lines = [f"Inbound IVR call from {record.caller or 'a withheld number'}."]
    if record.account is not None:
        lines.append(f"Account {record.account.number} identified by {record.identified_by}.")
        if record.verification is not None:
            lines.append(f"Caller {record.verification}.")
    else:
        lines.append("Account not identified.")
    if record.actions:
        lines.append("Caller actions: " + "; ".join(record.actions) + ".")
    else:
        lines.append("No menu actions.")
    lines.append(f"Ended: {record.end_reason}.")
    return "\n".join(lines)
