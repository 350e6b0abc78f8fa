"""What a `SpeechStream` reports. Times are seconds from the call's start, counted in samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["transcript", "grammar"]


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    conf: float


@dataclass(frozen=True)
class SpeechStarted:
    """Someone started speaking (the endpointer's decision, before any words): barge-in."""

    stream: str
    utterance: int
    at: float


@dataclass(frozen=True)
class Partial:
    """The words so far of the utterance in progress; may still change."""

    stream: str
    utterance: int
    mode: Mode
    text: str


@dataclass(frozen=True)
class Final:
    """An utterance's result, one per utterance and mode.

    `start`/`end` bound the speech the endpointer heard. `noise` means the utterance was steady
    noise or a tone, so text and words are left empty. `option` is the menu choice (grammar
    mode), None when the text is not exactly one phrase.
    """

    stream: str
    utterance: int
    mode: Mode
    text: str
    words: tuple[Word, ...]
    start: float
    end: float
    confidence: float  # mean word confidence, 0.0 without words
    option: str | None = None
    noise: bool = False
    # Wall seconds from the audio that ended the utterance reaching the stream (feed()) to this
    # result: how far recognition runs behind the call (a queue backing up shows here first).
    lag: float = 0.0


Event = SpeechStarted | Partial | Final
