"""Endpointing: where an utterance starts and ends in a stream of 20 ms PCM frames.

webrtcvad classifies each frame; on top of it a small state machine QUIET → SPEAKING → QUIET
with pre-roll, and two guards against what webrtcvad calls speech but is not (measured: it marks
100 % of white-noise and 440 Hz-tone frames as speech at every aggressiveness):

- a noise floor: a frame counts as voiced only if it is also `floor_margin_db` above the 10th
  percentile of the last `floor_window_ms` of frame energies, so steady noise stops counting once
  the window has heard it;
- an energy spread per utterance: speech rises and falls syllable by syllable, steady noise or a
  tone does not. An utterance whose voiced frames span less than `min_spread_db` (90th minus
  10th percentile) ends flagged `steady`, and the recogniser's words for it are not trusted.

Pure and deterministic: frames in, events out, frame indexes as the only clock.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

FRAME_S = 0.020  # 20 ms: the conference bridge's frame, and one webrtcvad frame
RATES = (8000, 16000)

EndReason = Literal["silence", "max_length", "flush"]


@dataclass(frozen=True)
class VadConfig:
    aggressiveness: int = 2  # webrtcvad mode: 0 lets most through as speech, 3 the least
    start_frames: int = 5  # voiced frames in a row that start one (webrtcvad calls the first
    # ~4 frames of any new noise speech; pre-roll makes the wait harmless)
    end_ms: int = 700  # non-speech that ends one
    preroll_ms: int = 1000  # audio kept from before the start, so the first syllable is not lost
    max_utterance_ms: int = 20000  # a longer utterance is cut and a new one starts
    floor_window_ms: int = 2000
    floor_margin_db: float = 6.0
    initial_floor_db: float = 20.0  # assumed before anything is heard (a quiet phone line)
    min_spread_db: float = 6.0

    def validate(self) -> None:
        _check("aggressiveness", self.aggressiveness, 0, 3)
        _check("start_frames", self.start_frames, 1, 50)
        _check("end_ms", self.end_ms, 100, 5000)
        _check("preroll_ms", self.preroll_ms, 0, 5000)
        _check("max_utterance_ms", self.max_utterance_ms, 1000, 120000)
        _check("floor_window_ms", self.floor_window_ms, 200, 20000)
        _check("floor_margin_db", self.floor_margin_db, 0.0, 40.0)
        _check("initial_floor_db", self.initial_floor_db, 0.0, 90.0)
        _check("min_spread_db", self.min_spread_db, 0.0, 40.0)


def _check(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"vad.{name}: {value} is outside {low}..{high}")


@dataclass(frozen=True)
class Start:
    """An utterance starts; `audio` is its pre-roll up to and including the current frame."""

    first_frame: int  # index of the first frame in `audio`
    voice_frame: int  # first frame of the voiced run that started it
    audio: bytes


@dataclass(frozen=True)
class Audio:
    """One more frame of the current utterance."""

    frame: int
    audio: bytes


@dataclass(frozen=True)
class End:
    """The utterance ended; every frame before `frame` has been handed over."""

    frame: int
    speech_end: int  # one past its last voiced frame
    reason: EndReason
    steady: bool  # its voiced frames' energy hardly moved: steady noise or a tone, not speech


Event = Start | Audio | End


def frame_energy_db(frame: bytes) -> float:
    """Mean power of 16-bit PCM in dB; 0 for digital silence, about 90 at full scale."""
    x = np.frombuffer(frame, dtype=np.int16).astype(np.float64)
    return 10.0 * math.log10(float(np.dot(x, x)) / len(x) + 1.0) if len(x) else 0.0


def webrtc_detector(rate: int, aggressiveness: int) -> Callable[[bytes], bool]:
    import webrtcvad

    vad = webrtcvad.Vad(aggressiveness)
    return lambda frame: vad.is_speech(frame, rate)


class Endpointer:
    """Feed 20 ms frames with `push`; it returns what happened at each one."""

    def __init__(
        self,
        rate: int,
        config: VadConfig | None = None,
        detector: Callable[[bytes], bool] | None = None,
    ) -> None:
        if rate not in RATES:
            raise ValueError(f"sample rate {rate} is not one of {RATES}")
        self.config = config or VadConfig()
        self.config.validate()
        self.rate = rate
        self.frame_bytes = round(rate * FRAME_S) * 2
        self._detect = detector or webrtc_detector(rate, self.config.aggressiveness)
        c = self.config
        self._end_frames = _frames(c.end_ms)
        self._max_frames = _frames(c.max_utterance_ms)
        window = _frames(c.floor_window_ms)
        # the window's energies in arrival order and sorted (np.percentile per frame cost 40 µs)
        self._energies: deque[float] = deque([c.initial_floor_db] * window)
        self._sorted = [c.initial_floor_db] * window
        self._floor_rank = int(0.1 * (window - 1))
        self._preroll: deque[bytes] = deque(maxlen=max(_frames(c.preroll_ms), c.start_frames))
        self._index = 0  # of the next frame
        self._run = 0  # voiced frames in a row (QUIET) or unvoiced in a row (SPEAKING)
        self._speaking = False
        self._utterance_start = 0
        self._last_voiced = 0
        self._voiced_energies: list[float] = []

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def frames(self) -> int:
        """Frames pushed so far."""
        return self._index

    def push(self, frame: bytes) -> list[Event]:
        if len(frame) != self.frame_bytes:
            raise ValueError(f"frame of {len(frame)} bytes, expected {self.frame_bytes}")
        index = self._index
        self._index += 1
        energy = frame_energy_db(frame)
        floor = self._sorted[self._floor_rank]  # 10th percentile of the window
        self._slide(energy)
        voiced = energy >= floor + self.config.floor_margin_db and self._detect(frame)
        if self._speaking:
            return self._speaking_frame(index, frame, voiced, energy)
        return self._quiet_frame(index, frame, voiced, energy)

    def _slide(self, energy: float) -> None:
        oldest = self._energies.popleft()
        del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._energies.append(energy)
        bisect.insort(self._sorted, energy)

    def flush(self) -> list[Event]:
        """End the utterance in progress, if any (the stream is closing)."""
        return [self._end("flush")] if self._speaking else []

    def _quiet_frame(self, index: int, frame: bytes, voiced: bool, energy: float) -> list[Event]:
        self._preroll.append(frame)
        self._run = self._run + 1 if voiced else 0
        if voiced:
            self._voiced_energies.append(energy)
        else:
            self._voiced_energies.clear()
        if self._run < self.config.start_frames:
            return []
        audio = b"".join(self._preroll)
        first = index + 1 - len(self._preroll)
        self._preroll.clear()
        self._speaking = True
        self._utterance_start = first
        self._last_voiced = index
        self._run = 0
        return [Start(first, index + 1 - self.config.start_frames, audio)]

    def _speaking_frame(self, index: int, frame: bytes, voiced: bool, energy: float) -> list[Event]:
        events: list[Event] = [Audio(index, frame)]
        if voiced:
            self._run = 0
            self._last_voiced = index
            self._voiced_energies.append(energy)
        else:
            self._run += 1
        if self._run >= self._end_frames:
            events.append(self._end("silence"))
        elif self._index - self._utterance_start >= self._max_frames:
            events.append(self._end("max_length"))
        return events

    def _end(self, reason: EndReason) -> End:
        spread = 0.0
        if len(self._voiced_energies) > 1:
            p10, p90 = np.percentile(self._voiced_energies, [10, 90])
            spread = float(p90 - p10)
        event = End(
            frame=self._index,
            speech_end=self._last_voiced + 1,
            reason=reason,
            steady=spread < self.config.min_spread_db,
        )
        self._speaking = False
        self._run = 0
        self._voiced_energies = []
        return event


def _frames(ms: float) -> int:
    return max(1, round(ms / 1000 / FRAME_S))
