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
from voice.asr.events import Event, Final, SpeechStarted
from voice.asr.live import CallSpeech
from voice.asr.phrases import PhraseSet
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
        # Live speech (None: keypad only). The caller's grammar finals wait in `_heard`.
        self._speech: CallSpeech | None = None
        self._phrases: PhraseSet | None = None
        self._heard: asyncio.Queue[Final] = asyncio.Queue()
        self._speech_started = asyncio.Event()
        self._speech_barge = False  # the prompt playing now may be cut by the caller's voice
        self._speaking = False  # an utterance of the caller's is in progress
        self._speaking_since = 0.0  # loop time its start was reported
        self._cut_by_speech = False  # the last prompt was cut by speech that chose nothing
        self.heard: Heard | None = None
        self._reply = telemetry.ReplyClock()  # times the IVR's reply to a key or a phrase

    def attach_speech(self, speech: CallSpeech, phrases: PhraseSet | None) -> None:
        """Spoken menu choices (`phrases`) and speech barge-in from the call's `speech`."""
        self._speech, self._phrases = speech, phrases
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
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def on_done() -> None:  # called from the media clock thread or this loop
            loop.call_soon_threadsafe(_resolve, finished)

        self._digit_arrived.clear()
        self._speech_started.clear()
        if not self._engine.play(self.identity.key, pcm, on_done, self._reply.on_start()):
            raise HangUp()
        waiters: list[Any] = [finished, self._ended.wait()]
        if barge_in:
            waiters.append(self._digit_arrived.wait())
            if self._speech_barge:
                waiters.append(self._speech_started.wait())
        await self._first(*waiters)
        if not finished.done():
            self._engine.stop_playback(self.identity.key)
            self._cut_by_speech = self._speech_started.is_set() and not self._digit_arrived.is_set()
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
        grammar = self._grammar(spoken) if max_digits == 1 else None
        if grammar is None:
            return await self._gather_keys(tokens, max_digits, timeout, digit_timeout, terminator)
        assert self._speech is not None and spoken is not None
        # Listen before the prompt starts, so a caller who talks over it is heard. A caller whose
        # speech cut the last prompt without choosing anything hears this one whole.
        while not self._heard.empty():
            self._heard.get_nowait()
        self._speech.expect(grammar)
        self._speech_barge = not self._cut_by_speech
        self._cut_by_speech = False
        try:
            if tokens:
                await self.play(tokens, barge_in=True)
            return await self._key_or_phrase(spoken, timeout)
        finally:
            self._speech_barge = False
            self._speech.expect(None)

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
        while True:
            self._raise_if_ended()
            if not self._digits.empty():
                self._cut_by_speech = False
                self._reply.answered_by_key()
                return self._digits.get_nowait()
            if not self._heard.empty():
                final = self._heard.get_nowait()
                if final.noise or not (final.text or final.option):
                    continue  # a cough, line noise, a tone: not an answer
                option = final.option if final.option in spoken else None
                self.heard = Heard(final.text, option, final.confidence)
                self._reply.answered_by_speech()
                if option is None:
                    self._cut_by_speech = True  # so the re-prompt is heard whole
                    return ""
                self._cut_by_speech = False
                return spoken[option]
            remaining = deadline - loop.time()
            if remaining <= 0:
                if not self._speaking or extended:
                    return ""
                extended, deadline = True, self._speaking_since + SPEECH_GRACE  # hear them out
                continue
            digit = asyncio.ensure_future(self._digits.get())
            heard = asyncio.ensure_future(self._heard.get())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first(digit, heard, self._ended.wait()), remaining)
            # Whatever arrived goes back in its queue, in order, for the checks above.
            for getter, queue in ((digit, self._digits), (heard, self._heard)):
                if getter.done() and not getter.cancelled():
                    _requeue_first(queue, getter.result())
                else:
                    getter.cancel()

    def _grammar(self, spoken: Mapping[str, str] | None) -> PhraseSet | None:
        if not spoken or self._speech is None or self._phrases is None:
            return None
        return self._phrases.only(spoken)

    async def play_audio(self, pcm: np.ndarray, *, wait: bool = True) -> None:
        """Play raw PCM (a tone, ringback) to this call only; no barge-in. `wait=False` returns
        at once (stop it with `stop_audio`)."""
        await self._wait_confirmed()
        loop = asyncio.get_running_loop()
        finished = loop.create_future()

        def on_done() -> None:
            loop.call_soon_threadsafe(_resolve, finished)

        if not self._engine.play(self.identity.key, pcm, on_done, self._reply.on_start()):
            raise HangUp()
        if wait:
            await self._first(finished, self._ended.wait())
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
        await self._first(self._confirmed.wait(), self._ended.wait())
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
        if isinstance(event, SpeechStarted):
            self._speaking = True
            self._speaking_since = asyncio.get_running_loop().time()
            self._speech_started.set()
        elif isinstance(event, Final):
            self._speaking = False
            if event.mode == "grammar":
                self._heard.put_nowait(event)
                if self._speech is not None:
                    self._reply.heard(event.end, self._speech.heard_until())

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


def _requeue_first(queue: asyncio.Queue[Any], item: Any) -> None:
    rest = []
    while not queue.empty():
        rest.append(queue.get_nowait())
    for entry in (item, *rest):
        queue.put_nowait(entry)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
