"""A live SIP call as an async object implementing `voice.ivr.call.Call`.

Everything here runs on the event loop. Audio is handed to the engine's player (no pjlib call);
DTMF digits arrive from the engine in order and wait in a queue, so a key typed during a prompt
both stops the prompt (barge-in) and answers the next `gather`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from voice.ivr.call import DTMF_KEYS, HangUp
from voice.sip.engine import CallIdentity, SipEngine
from voice.sip.uri import caller_id, user_part

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 10.0  # seconds to wait for the ACK of a call we answer before giving up

Renderer = Callable[[Sequence[str]], np.ndarray]


class SipCall:
    def __init__(
        self,
        engine: SipEngine,
        identity: CallIdentity,
        render: Renderer,
        answer_timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        self._engine = engine
        self._answer_timeout = answer_timeout
        self.identity = identity
        self._render = render
        self._digits: asyncio.Queue[str] = asyncio.Queue()
        self._confirmed = asyncio.Event()
        self._ended = asyncio.Event()
        self._digit_arrived = asyncio.Event()
        self.end_code: int | None = None
        self.end_reason: str | None = None
        self.last_digit_at: float | None = None  # monotonic, for latency measurements

    # -- Call protocol ------------------------------------------------------------------------

    @property
    def caller(self) -> str | None:
        return caller_id(self.identity.remote_uri)

    @property
    def callee(self) -> str | None:
        return user_part(self.identity.local_uri)
    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def play(self, tokens: Sequence[str], *, barge_in: bool = True) -> None:
        await self._wait_confirmed()
        if barge_in and not self._digits.empty():
            return  # typed ahead: the key already answers whatever this prompt asks
        pcm = self._render(tokens)
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def on_done() -> None:  # called from the media clock thread or this loop
            loop.call_soon_threadsafe(_resolve, finished)

        self._digit_arrived.clear()
        if not self._engine.play(self.identity.key, pcm, on_done):
            raise HangUp()
        waiters: list[Any] = [finished, self._ended.wait()]
        if barge_in:
            waiters.append(self._digit_arrived.wait())
        await self._first(*waiters)
        if not finished.done():
            self._engine.stop_playback(self.identity.key)
        self._raise_if_ended()

    async def gather(
        self,
        tokens: Sequence[str],
        *,
        max_digits: int = 1,
        timeout: float = 5.0,
        digit_timeout: float = 3.0,
        terminator: str = "#",
    ) -> str:
        if tokens:
            await self.play(tokens, barge_in=True)
        collected = ""
        while len(collected) < max_digits:
            wait = timeout if not collected else digit_timeout
            digit = await self._next_digit(wait)
            if digit is None or (digit == terminator and max_digits > 1):
                break
            collected += digit
        return collected

    async def hangup(self) -> None:
        if not self._ended.is_set():
            await self._engine.hangup(self.identity.key)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), 5.0)

    async def wait_answered(self) -> bool:
        """True once the call is confirmed (ACKed or answered); False if it ended first."""
        await self._first(self._confirmed.wait(), self._ended.wait())
        return self._confirmed.is_set()

    # -- events from the engine (on the loop) -------------------------------------------------

    def on_confirmed(self) -> None:
        self._confirmed.set()

    def on_digit(self, digit: str) -> None:
        if digit not in DTMF_KEYS:
            log.info("call %s: ignoring DTMF %r", self.identity.key, digit)
            return
        self.last_digit_at = time.monotonic()
        self._digits.put_nowait(digit)
        self._digit_arrived.set()

    def on_disconnected(self, code: int, reason: str) -> None:
        self.end_code, self.end_reason = code, reason
        self._ended.set()

    # -- helpers ------------------------------------------------------------------------------

    async def _wait_confirmed(self) -> None:
        self._raise_if_ended()
        if self._confirmed.is_set():
            return
        try:
            await asyncio.wait_for(
                self._first(self._confirmed.wait(), self._ended.wait()), self._answer_timeout
            )
        except TimeoutError:
            await self.hangup()
            raise HangUp() from None
        self._raise_if_ended()

    async def _next_digit(self, timeout: float) -> str | None:
        self._raise_if_ended()
        if not self._digits.empty():
            return self._digits.get_nowait()
        getter = asyncio.ensure_future(self._digits.get())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first(getter, self._ended.wait()), timeout)
        # A digit that arrived together with the timeout still counts.
        if getter.done() and not getter.cancelled():
            return getter.result()
        getter.cancel()
        self._raise_if_ended()
        return None

    def _raise_if_ended(self) -> None:
        if self._ended.is_set():
            raise HangUp()

    @staticmethod
    async def _first(*aws: Any) -> None:
        """Wait until the first of `aws` completes; cancel the rest (futures passed in excepted)."""
        tasks = [a if isinstance(a, asyncio.Future) else asyncio.ensure_future(a) for a in aws]
        owned = [t for t, a in zip(tasks, aws, strict=True) if t is not a]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in owned:
                task.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
