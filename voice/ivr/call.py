"""The small call interface IVR flows depend on, so a flow runs unchanged on pjsua2 or a fake."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

DTMF_KEYS = frozenset("0123456789*#ABCD")


class HangUp(Exception):
    """The far end hung up; raised from whatever the flow was awaiting."""


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
    ) -> str:
        """Play `tokens` with barge-in, then collect up to `max_digits` keys.

        Ends early on `terminator` (not included), on `timeout` before the first key, or on
        `digit_timeout` between keys. Returns "" on silence.
        """
        ...

    async def hangup(self) -> None: ...
