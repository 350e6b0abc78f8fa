"""A live SIP call as an async object implementing `voice.ivr.call.Call`.

It joins the three rooms below it: the SIP engine (voice/sip), live speech (voice/asr) and the
IVR's call protocol (voice/ivr), which is why it lives with the calls and not in voice/sip.

Everything here runs on the event loop. Audio is handed to the engine's player (no pjlib call);
DTMF digits arrive from the engine in order and wait in a queue, so a key typed during a prompt
both stops the prompt (barge-in) and answers the next `gather`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from voice import telemetry
from voice.asr.events import Event
from voice.asr.live import CallSpeech
from voice.asr.phrases import PhraseSet
from voice.calls.hearing import Hearing
from voice.ivr.call import DTMF_KEYS, HangUp, Heard
from voice.sip.engine import CallIdentity, SipEngine
from voice.sip.uri import caller_id, user_part

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 10.0  # seconds to wait for the ACK of a call we answer before giving up
# A caller still speaking when a gather times out is heard out: up to this long after their
# utterance began (the endpointer cuts an utterance at 20 s; recognition needs a moment more).
SPEECH_GRACE = 22.0

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
        self.heard: Heard | None = None
        self._reply = telemetry.ReplyClock()  # times the IVR's reply to a key or a phrase
        self._hearing = Hearing(self._reply)  # live speech; keypad only until attach_speech

    def attach_speech(self, speech: CallSpeech, phrases: PhraseSet | None) -> None:
        """Spoken menu choices (`phrases`) and speech barge-in from the call's `speech`."""
        self._hearing.attach(speech, phrases)
        speech.on_caller = self.on_speech

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

    @property
    def answered(self) -> bool:
        return self._confirmed.is_set()

    async def play(self, tokens: Sequence[str], *, barge_in: bool = True) -> None:
        await self._wait_confirmed()
        if barge_in and not self._digits.empty():
            return  # typed ahead: the key already answers whatever this prompt asks
        pcm = self._render(tokens)
        finished, on_done = _playback_done()
        self._digit_arrived.clear()
        self._hearing.started.clear()
        if not self._engine.play(self.identity.key, pcm, on_done, self._reply.on_start()):
            raise HangUp()
        waiters: list[Any] = [finished, self._ended.wait()]
        if barge_in:
            waiters.append(self._digit_arrived.wait())
            if self._hearing.barge:
                waiters.append(self._hearing.started.wait())
        await first_of(*waiters)
        if not finished.done():
            self._engine.stop_playback(self.identity.key)
            cut = self._hearing.started.is_set() and not self._digit_arrived.is_set()
            self._hearing.cut = cut
        self._raise_if_ended()

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
        grammar = self._hearing.grammar(spoken) if max_digits == 1 else None
        if grammar is None:
            return await self._gather_keys(tokens, max_digits, timeout, digit_timeout, terminator)
        assert spoken is not None
        self._hearing.expect(grammar)
        try:
            if tokens:
                await self.play(tokens, barge_in=True)
            return await self._key_or_phrase(spoken, timeout)
        finally:
            self._hearing.stop_expecting()

    async def _gather_keys(
        self,
        tokens: Sequence[str],
        max_digits: int,
        timeout: float,
        digit_timeout: float,
        terminator: str,
    ) -> str:
        if tokens:
            await self.play(tokens, barge_in=True)
        collected, digit = "", None
        while len(collected) < max_digits:
            wait = timeout if not collected else digit_timeout
            digit = await self._next_digit(wait)
            if digit is None or (digit == terminator and max_digits > 1):
                break
            collected += digit
        if digit is not None:  # ended by a key, not by waiting for one
            self._reply.answered_by_key()
        return collected

    async def _key_or_phrase(self, spoken: Mapping[str, str], timeout: float) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        extended = False
        hearing = self._hearing
        while True:
            self._raise_if_ended()
            if not self._digits.empty():
                hearing.cut = False
                self._reply.answered_by_key()
                return self._digits.get_nowait()
            if not hearing.finals.empty():
                answer = hearing.answer(spoken)
                if answer is None:
                    continue  # a cough, line noise, a tone: not an answer
                self.heard, choice = answer
                return choice
            remaining = deadline - loop.time()
            if remaining <= 0:
                if not hearing.speaking or extended:
                    return ""
                extended, deadline = True, hearing.speaking_since + SPEECH_GRACE  # hear them out
                continue
            digit = asyncio.ensure_future(self._digits.get())
            heard = asyncio.ensure_future(hearing.finals.get())
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(first_of(digit, heard, self._ended.wait()), remaining)
            finally:
                _cancel(digit, heard)
            # Whatever arrived goes back in its queue, in order, for the checks above.
            for getter, queue in ((digit, self._digits), (heard, hearing.finals)):
                if getter.done() and not getter.cancelled():
                    _requeue_first(queue, getter.result())

    async def play_audio(self, pcm: np.ndarray, *, wait: bool = True) -> None:
        """Play raw PCM (a tone, ringback) to this call only; no barge-in. `wait=False` returns
        at once (stop it with `stop_audio`)."""
        await self._wait_confirmed()
        finished, on_done = _playback_done()
        if not self._engine.play(self.identity.key, pcm, on_done, self._reply.on_start()):
            raise HangUp()
        if wait:
            await first_of(finished, self._ended.wait())
            self._raise_if_ended()

    def stop_audio(self) -> None:
        self._engine.stop_playback(self.identity.key)

    async def next_key(self, timeout: float) -> str | None:
        """The next key pressed within `timeout` seconds (keys typed earlier first), or None.
        Raises HangUp once the far end is gone."""
        return await self._next_digit(timeout)

    def clear_keys(self) -> None:
        """Forget keys typed so far (e.g. before a voicemail's recording starts)."""
        while not self._digits.empty():
            self._digits.get_nowait()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    @property
    def key(self) -> int:
        return self.identity.key

    async def hangup(self) -> None:
        if not self._ended.is_set():
            await self._engine.hangup(self.identity.key)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ended.wait(), 5.0)

    async def wait_answered(self) -> bool:
        """True once the call is confirmed (ACKed or answered); False if it ended first."""
        await first_of(self._confirmed.wait(), self._ended.wait())
        return self._confirmed.is_set()

    # -- events from the engine (on the loop) -------------------------------------------------

    def on_confirmed(self) -> None:
        self._confirmed.set()

    def on_digit(self, digit: str) -> None:
        if digit not in DTMF_KEYS:
            log.info("call %s: ignoring DTMF %r", self.identity.key, digit)
            return
        self._reply.key()
        self._digits.put_nowait(digit)
        self._digit_arrived.set()

    def on_speech(self, event: Event) -> None:
        """The caller's stream: an utterance started (barge-in) or was recognised."""
        self._hearing.on_speech(event)

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
                first_of(self._confirmed.wait(), self._ended.wait()), self._answer_timeout
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
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_of(getter, self._ended.wait()), timeout)
            # A digit that arrived together with the timeout still counts.
            if getter.done() and not getter.cancelled():
                return getter.result()
        finally:
            _cancel(getter)
        self._raise_if_ended()
        return None

    def _raise_if_ended(self) -> None:
        if self._ended.is_set():
            raise HangUp()


async def first_of(*aws: Any) -> None:
    """Wait until the first of `aws` completes; cancel the rest (futures passed in excepted)."""
    tasks = [a if isinstance(a, asyncio.Future) else asyncio.ensure_future(a) for a in aws]
    owned = [t for t, a in zip(tasks, aws, strict=True) if t is not a]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in owned:
            task.cancel()


def _cancel(*getters: asyncio.Future[Any]) -> None:
    # Whatever happened (a result, a timeout, the call's task cancelled), a getter still
    # pending goes: left so, it outlives the call until the garbage collector destroys it
    # ("Task was destroyed but it is pending!", 35 in a soak). A done one is left as it is.
    for getter in getters:
        getter.cancel()


def _requeue_first(queue: asyncio.Queue[Any], item: Any) -> None:
    rest = []
    while not queue.empty():
        rest.append(queue.get_nowait())
    for entry in (item, *rest):
        queue.put_nowait(entry)


def _playback_done() -> tuple[asyncio.Future[None], Callable[[], None]]:
    """A future and the `on_done` that resolves it, called from the media clock thread or
    this loop."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    def on_done() -> None:
        loop.call_soon_threadsafe(_resolve, finished)

    return finished, on_done


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
