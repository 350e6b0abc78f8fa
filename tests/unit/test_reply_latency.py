"""Which replies of a live call are timed for /metrics: the audio that follows a key that
answered a prompt, not the re-prompt after a digit timeout, nor a prompt nobody answered.

`SipCall` runs on an engine stand-in whose player "sends the first frame" when it is asked to
play (calls `on_start` at once) and finishes the audio at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
from prometheus_client import REGISTRY

from voice.asr.events import Final
from voice.calls.call import SipCall
from voice.sip.engine import CallIdentity

KEYS = "voice_key_to_audio_seconds_count"


class Engine:
    def __init__(self) -> None:
        self.started: list[bool] = []  # per play: did it carry a reply to time

    def play(self, key: int, pcm: Any, on_done: Callable[[], None], on_start: Any = None) -> bool:
        self.started.append(on_start is not None)
        if on_start is not None:
            on_start()
        on_done()
        return True

    def stop_playback(self, key: int) -> None:
        return None


def timed() -> float:
    return REGISTRY.get_sample_value(KEYS) or 0.0


def live_call() -> tuple[SipCall, Engine]:
    engine = Engine()
    identity = CallIdentity(1, "sip-1", "sip:+12125550101@127.0.0.1", "sip:ivr@127.0.0.1")
    silence = np.zeros(320, dtype=np.int16)
    call = SipCall(engine, identity, lambda tokens: silence)  # type: ignore[arg-type]
    call.on_confirmed()
    return call, engine


async def test_a_key_that_answers_a_menu_times_the_next_audio_once() -> None:
    call, engine = live_call()
    before = timed()
    asyncio.get_running_loop().call_later(0.05, call.on_digit, "1")
    assert await call.gather(["menu"], max_digits=1, timeout=2) == "1"
    await call.play(["balance"])  # the reply
    await call.play(["anything_else"])  # not a reply to anything
    assert engine.started == [False, True, False]
    assert timed() == before + 1


async def test_digits_ended_by_the_digit_timeout_are_not_a_reply_to_time() -> None:
    call, engine = live_call()
    before = timed()
    call.on_digit("4")
    call.on_digit("2")
    assert await call.gather(["account"], max_digits=8, timeout=2, digit_timeout=0.1) == "42"
    await call.play(["not_found"])  # came after the caller waited out the timeout
    assert engine.started == [False]  # typed ahead: the prompt itself was skipped
    assert timed() == before


async def test_digits_ended_by_the_terminator_are_a_reply_to_time() -> None:
    call, engine = live_call()
    before = timed()
    for key in "30003#":
        call.on_digit(key)
    assert await call.gather(["account"], max_digits=8, timeout=2) == "30003"
    await call.play(["found"])
    assert engine.started == [True]
    assert timed() == before + 1


async def test_silence_is_not_an_answer() -> None:
    call, engine = live_call()
    before = timed()
    assert await call.gather(["menu"], max_digits=1, timeout=0.1) == ""
    await call.play(["menu_again"])
    assert engine.started == [False, False]
    assert timed() == before


class Speech:
    """The call's live speech, reduced to what the spoken menu asks of it."""

    def __init__(self) -> None:
        self.on_caller: Any = None

    def expect(self, phrases: object) -> None:
        return None

    def heard_until(self) -> float:
        return 10.6  # the caller's audio has reached 10.6 s into the call


class Phrases:
    def only(self, spoken: object) -> Phrases:
        return self


async def test_a_spoken_choice_is_timed_from_the_end_of_the_speech() -> None:
    call, engine = live_call()
    call.attach_speech(Speech(), Phrases())  # type: ignore[arg-type]
    name = "voice_speech_to_audio_seconds"
    before = {s: REGISTRY.get_sample_value(f"{name}_{s}") or 0.0 for s in ("count", "sum")}
    said = Final("caller", 1, "grammar", "잔액", (), 9.8, 10.0, 0.9, option="balance")
    asyncio.get_running_loop().call_later(0.05, call.on_speech, said)
    assert await call.gather(["menu"], timeout=2, spoken={"balance": "1"}) == "1"
    await call.play(["balance"])
    assert engine.started == [False, True]
    assert REGISTRY.get_sample_value(f"{name}_count") == before["count"] + 1
    # It ended 0.6 s of audio before the result arrived: at least that long ago.
    assert REGISTRY.get_sample_value(f"{name}_sum") - before["sum"] >= 0.6


async def test_a_gather_cancelled_with_its_call_leaves_no_getter_pending() -> None:
    # A call's task is cancelled at hang-up or drain while it waits for a key: its queue
    # getters must go with it, not linger until the garbage collector destroys them.
    call, _ = live_call()
    before = set(asyncio.all_tasks())
    waiting = asyncio.create_task(call.gather(["menu"], max_digits=4, timeout=30))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks() - before if not t.done()]
    assert left == [], left
