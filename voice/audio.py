"""What SIP, speech and the IVR agree on about audio, so that none imports another for it.

Every PCM buffer in a call is int16 mono at `SAMPLE_RATE`, moved in 20 ms frames (pjmedia's
default ptime): the conference bridge's clock. A `Sink` takes one frame's bytes on the media
thread and must only queue. A `Rendered` prompt carries the `Span`s of text it says, so the
player can time what the IVR said without recognising it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000  # Hz, the pjsua2 conference bridge rate
FRAME_TIME = 0.020  # 20 ms, pjmedia's default ptime
FRAME_SAMPLES = int(SAMPLE_RATE * FRAME_TIME)
FRAME_BYTES = FRAME_SAMPLES * 2  # int16

Sink = Callable[[bytes], None]  # one frame of PCM, on the media thread: it must only queue


@dataclass(frozen=True)
class Span:
    """One clip of a rendered prompt: its text and where it is, in samples."""

    text: str
    start: int
    end: int


class Rendered(np.ndarray):
    """Rendered PCM (int16 at SAMPLE_RATE) with the `spans` it says; any slice or result of
    arithmetic on it has no spans (it no longer says them)."""

    spans: tuple[Span, ...]

    def __array_finalize__(self, obj: object) -> None:
        self.spans = ()
