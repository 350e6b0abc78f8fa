"""In-memory stand-ins for the IVR's `Call`, `Ledger` and `Journal` interfaces.

`FakeCall` plays a scripted caller: each `gather()` consumes the next script entry, which is
either the keys the caller types (a string; "" for silence), `Said(text, option)` for a spoken
answer (option None: speech that names nothing on offer) or `HANGUP`. It behaves like the
real call where the flow can observe it: `max_digits` and the terminator cut the keys short,
and once the far end has hung up every later `play`/`gather` raises `HangUp` too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from accounts.views import AccountSummary, Balance, InvoiceSummary, PaymentSummary
from voice.ivr.call import DTMF_KEYS, HangUp, Heard


class _HangUpSentinel:
    def __repr__(self) -> str:
        return "HANGUP"


HANGUP: Any = _HangUpSentinel()
"""Script entry: the caller hangs up instead of answering this `gather`."""


@dataclass(frozen=True)
class Said:
    """Script entry: the caller says `text`, which names menu `option` (or nothing)."""

    text: str
    option: str | None
    confidence: float = 0.9


class ScriptExhausted(AssertionError):
    """The flow asked for more input than the test scripted."""


@dataclass(frozen=True)
class GatherCall:
    tokens: list[str]
    max_digits: int
    timeout: float
    digit_timeout: float
    terminator: str


class FakeCall:
    """A scripted caller implementing the `Call` protocol."""

    def __init__(
        self,
        caller: str | None,
        script: Iterable[str | Any] = (),
        *,
        hangup_on_play: str | None = None,
    ) -> None:
        self._caller = caller
        self.script: list[str | Any] = list(script)
        for entry in self.script:
            if isinstance(entry, Said):
                continue
            if entry is not HANGUP and (not isinstance(entry, str) or not set(entry) <= DTMF_KEYS):
                raise ValueError(f"script entry {entry!r} is neither keys, '' nor HANGUP")
        self.hangup_on_play = hangup_on_play
        self.plays: list[tuple[list[str], bool]] = []
        self.gathers: list[tuple[list[str], int]] = []
        self.gather_calls: list[GatherCall] = []
        # Every prompt in order, plays and gathers interleaved: ("play" | "gather", tokens).
        self.prompts: list[tuple[str, list[str]]] = []
        self.hangups = 0  # our side's hangup() calls
        self.far_end_gone = False  # the caller hung up
        self.heard: Heard | None = None
        self.spoken: list[Mapping[str, str] | None] = []  # each gather's `spoken` argument

    @property
    def caller(self) -> str | None:
        return self._caller

    @property
    def remaining(self) -> list[str | Any]:
        return list(self.script)

    def _start_prompt(self, kind: str, tokens: Sequence[str]) -> None:
        self.prompts.append((kind, list(tokens)))
        if self.far_end_gone:
            raise HangUp()
        if self.hangup_on_play is not None and self.hangup_on_play in tokens:
            self.far_end_gone = True
            raise HangUp()

    async def play(self, tokens: Sequence[str], *, barge_in: bool = True) -> None:
        self.plays.append((list(tokens), barge_in))
        self._start_prompt("play", tokens)

    async def gather(
        self,
        tokens: Sequence[str],
        *,
        max_digits: int = 1,
        timeout: float = 5.0,
        digit_timeout: float = 3.0,
        terminator: str = "#",
        spoken: Mapping[str, str] | None = None,
    ) -> str:
        self.heard = None
        self.spoken.append(spoken)
        self.gathers.append((list(tokens), max_digits))
        self.gather_calls.append(
            GatherCall(list(tokens), max_digits, timeout, digit_timeout, terminator)
        )
        self._start_prompt("gather", tokens)
        if not self.script:
            raise ScriptExhausted(f"gather {list(tokens)} after the script ran out")
        response = self.script.pop(0)
        if response is HANGUP:
            self.far_end_gone = True
            raise HangUp()
        if isinstance(response, Said):
            if max_digits != 1 or not spoken:
                raise AssertionError(f"{response} spoken to a gather that takes no speech")
            self.heard = Heard(response.text, response.option, response.confidence)
            return spoken.get(response.option or "", "")
        return collect(response, max_digits=max_digits, terminator=terminator)

    async def hangup(self) -> None:
        self.hangups += 1


def collect(keys: str, *, max_digits: int, terminator: str = "#") -> str:
    """What a gather returns for `keys` typed in one go: stop at the terminator (dropped) or
    after `max_digits` keys. Keys typed past that point are dropped by the fake."""
    out = ""
    for key in keys:
        if key == terminator:
            break
        out += key
        if len(out) >= max_digits:
            break
    return out


@dataclass
class FakeLedger:
    """In-memory ledger. `phones` maps an exact caller string to account numbers."""

    accounts: list[AccountSummary] = field(default_factory=list)
    phones: Mapping[str, list[str]] = field(default_factory=dict)
    balances: dict[int, Balance] = field(default_factory=dict)
    invoices: dict[int, InvoiceSummary] = field(default_factory=dict)
    payments: dict[int, PaymentSummary] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def _by_number(self, number: str) -> AccountSummary | None:
        return next((a for a in self.accounts if a.number == number), None)

    async def accounts_for_phone(self, caller: str | None) -> list[AccountSummary]:
        self.calls.append(("accounts_for_phone", caller))
        if caller is None:
            return []
        found = [self._by_number(n) for n in self.phones.get(caller, [])]
        return [a for a in found if a is not None]

    async def account_by_number(self, number: str) -> AccountSummary | None:
        self.calls.append(("account_by_number", number))
        return self._by_number(number)

    async def balance(self, account_id: int) -> Balance:
        self.calls.append(("balance", account_id))
        return self.balances[account_id]

    async def last_invoice(self, account_id: int) -> InvoiceSummary | None:
        self.calls.append(("last_invoice", account_id))
        return self.invoices.get(account_id)

    async def last_payment(self, account_id: int) -> PaymentSummary | None:
        self.calls.append(("last_payment", account_id))
        return self.payments.get(account_id)


class FakeJournal:
    """Records call events (identification included, in order) and the single closing note."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.identifications: list[tuple[AccountSummary, str]] = []
        self.finishes: list[tuple[str, str, str]] = []

    async def event(self, kind: str, detail: dict[str, Any]) -> None:
        assert not self.finishes, f"event {kind} after finish()"
        self.events.append((kind, dict(detail)))

    async def identified(self, account: AccountSummary, how: str) -> None:
        assert not self.finishes, "identified after finish()"
        self.identifications.append((account, how))
        self.events.append(("identified", {"account": account.number, "how": how}))

    async def finish(self, status: str, end_reason: str, summary: str) -> None:
        assert not self.finishes, f"finish() called twice: {self.finishes[0]} then {status}"
        self.finishes.append((status, end_reason, summary))

    @property
    def finished(self) -> tuple[str, str, str]:
        """The (status, end_reason, summary) of the one finish() call."""
        assert len(self.finishes) == 1, f"finish() called {len(self.finishes)} times"
        return self.finishes[0]

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]
