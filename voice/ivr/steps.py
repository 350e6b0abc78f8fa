"""Journaled call primitives shared by the IVR's scripts: every prompt and every answer is a
call event, so the journal tells what the caller heard and did, step by step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from voice.config import IvrConfig
from voice.ivr.call import Call


class Journal(Protocol):
    async def event(self, kind: str, detail: dict[str, Any]) -> None: ...


class Steps:
    def __init__(self, call: Call, journal: Journal, cfg: IvrConfig) -> None:
        self.call = call
        self.journal = journal
        self.cfg = cfg

    async def play(self, tokens: Sequence[str], *, barge_in: bool = True) -> None:
        await self.journal.event("prompt", {"tokens": list(tokens)})
        await self.call.play(tokens, barge_in=barge_in)

    async def gather(
        self,
        tokens: Sequence[str],
        *,
        max_digits: int,
        timeout: float | None = None,
        spoken: dict[str, str] | None = None,
        secret: bool = False,
    ) -> str:
        """`secret`: the keys are a verification value; the journal keeps only their count."""
        await self.journal.event("prompt", {"tokens": list(tokens)})
        digits = await self.call.gather(
            tokens,
            max_digits=max_digits,
            timeout=timeout or self.cfg.digit_timeout,
            digit_timeout=self.cfg.digit_timeout,
            spoken=spoken,
        )
        heard = self.call.heard
        if heard is not None:
            detail = {"text": heard.text, "option": heard.option, "confidence": heard.confidence}
            await self.journal.event("speech", detail)
        elif secret:
            await self.journal.event("keys", {"digits": "*" * len(digits), "secret": True})
        else:
            await self.journal.event("keys", {"digits": digits})
        return digits

    async def farewell(self, key: str) -> None:
        await self.play([key], barge_in=False)
        await self.call.hangup()
