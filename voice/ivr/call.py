"""The small call interface IVR flows depend on, so a flow runs unchanged on pjsua2 or a fake."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

DTMF_KEYS = frozenset("0123456789*#ABCD")


class HangUp(Exception):
    """The far end hung up; raised from whatever the flow was awaiting."""


@dataclass(frozen=True)
class Heard:
    """What the caller said in answer to a gather (speech instead of keys)."""

    text: str
    option: str | None  # the menu option it names; None: understood as nothing on offer
    confidence: float


class Call(Protocol):
    @property
    def caller(self) -> str | None:
        """The calling party's user part as received (untrusted), or None when withheld."""
        ...

    async def play(self, tokens: Sequence[str], *, barge_in: bool = True) -> None:
        """Speak `tokens` (prompt keys and say-vocabulary words).

        With barge-in a keypress stops the prompt at once; the key stays queued for `gather`.
        """
        ...

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
        """Play `tokens` with barge-in, then collect up to `max_digits` keys.

        Ends early on `terminator` (not included), on `timeout` before the first key, or on
        `digit_timeout` between keys. Returns "" on silence.

        `spoken` (option -> key) lets a one-key gather be answered by voice when the call has
        speech: saying an option's phrase returns its key, whichever of key or phrase comes
        first; the caller's voice then also cuts the prompt short. `heard` tells what was said
        (an utterance that names no option returns "" with `heard.option` None).
        """
        ...

    @property
    def heard(self) -> Heard | None:
        """The speech that answered the last gather, or None (keys, silence, no speech)."""
        ...

    async def hangup(self) -> None: ...
