"""Voicemail: greeting, beep, the caller's message until `#`, hang-up or the time limit.

Pure over two small interfaces, so the state machine runs against fakes in unit tests:
`VoicemailCall` (the customer's call) and `Capture` (where the message goes: a mono WAV fed
from the call's tap, in the worker).

    GREETING -> BEEP -> RECORDING -> done
                            | "#"          -> ended_by "pound"
                            | hang-up      -> ended_by "hang-up"
                            | time limit   -> ended_by "time limit"
A hang-up during the greeting or beep leaves no message (`seconds` 0, nothing to keep).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voice.ivr.call import HangUp

FINISH_KEY = "#"


class VoicemailCall(Protocol):
    async def play(self, tokens: Sequence[str], *, barge_in: bool = True) -> None: ...
    async def play_audio(self, pcm: np.ndarray, *, wait: bool = True) -> None: ...
    async def next_key(self, timeout: float) -> str | None: ...
    def clear_keys(self) -> None: ...


class Capture(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> float:
        """Stop recording; the seconds recorded."""
        ...


@dataclass(frozen=True)
class Message:
    started: bool  # the beep was heard and recording began
    seconds: float
    ended_by: str  # "pound", "hang-up", "time limit", or "hang-up before the beep"


async def record_message(
    call: VoicemailCall,
    capture: Capture,
    max_seconds: float,
    beep: np.ndarray,
    clock: Callable[[], float],
) -> Message:
    try:
        await call.play(["voicemail_greeting"], barge_in=False)
        await call.play_audio(beep)
    except HangUp:
        return Message(False, 0.0, "hang-up before the beep")
    call.clear_keys()  # keys typed during the greeting are not the end of the message
    await capture.start()
    ended_by = "time limit"
    deadline = clock() + max_seconds
    try:
        while (remaining := deadline - clock()) > 0:
            key = await call.next_key(remaining)
            if key == FINISH_KEY:
                ended_by = "pound"
                break
    except HangUp:
        ended_by = "hang-up"
    finally:
        seconds = await capture.stop()
    return Message(True, seconds, ended_by)
