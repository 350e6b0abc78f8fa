"""The recording matcher the call tests judge "heard whole" by (tests/integration/audio.py).

Synthetic speech-like audio (noise in syllable envelopes) stands in for a rendered prompt: the
matcher must find what a receiver really does to a prompt (frame drops, a stall, the prompt said
twice) and must still fail a recording that lost part of the prompt.
"""

from __future__ import annotations

import numpy as np

from tests.integration.audio import match_pieces

RATE = 16000


def speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    syllables = np.abs(np.sin(np.arange(n) * np.pi / (0.18 * RATE))) ** 2
    syllables[(np.arange(n) // int(1.3 * RATE)) % 4 == 3] *= 0.02  # a pause now and then
    return (rng.normal(0, 3000, n) * syllables).astype(np.int16)


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def drop(audio: np.ndarray, at_s: float, ms: int = 20) -> np.ndarray:
    at = int(at_s * RATE)
    return np.concatenate([audio[:at], audio[at + ms * RATE // 1000 :]])


def test_a_prompt_heard_whole_matches_at_one_lag() -> None:
    menu = speech(8, 1)
    scores, jump, offset = match_pieces(np.concatenate([quiet(1.5), menu, quiet(1)]), menu)
    assert min(scores) > 0.99 and jump == 0 and offset == int(1.5 * RATE)


def test_frame_drops_and_a_stall_keep_every_piece() -> None:
    menu = speech(8, 2)
    heard = menu.copy()
    for at in (0.45, 0.83, 1.31, 1.8, 2.4, 3.6):  # lag steps as a starved UA's jitter buffer made
        heard = drop(heard, at, 10)
    stall = int(5.0 * RATE)
    heard = np.concatenate([quiet(1), heard[:stall], quiet(1.2), heard[stall:], quiet(1)])
    scores, jump, _ = match_pieces(heard, menu)
    # A piece with a drop inside scores as its worse half (0.7-0.9); none is lost.
    assert min(scores) > 0.6 and float(np.median(scores)) > 0.95, scores
    assert 1.1 < jump < 1.3  # the stall is seen as one delay


def test_the_first_saying_of_a_repeated_prompt_is_the_one_judged() -> None:
    # The menu, "no input", the menu again cut off by the hang-up; a glitch in the first
    # saying's first piece once made the matcher judge the cut-off second saying (CI).
    menu = speech(8, 3)
    first = menu.copy()
    first[2000:2400] = 0
    heard = np.concatenate([quiet(1), first, quiet(2), menu[: int(2.7 * RATE)]])
    scores, _, offset = match_pieces(heard, menu)
    assert offset == RATE and min(scores) > 0.6 and sorted(scores)[1] > 0.95, scores


def test_a_prompt_cut_short_or_replaced_by_noise_fails() -> None:
    menu = speech(8, 4)
    cut = np.concatenate([quiet(1), menu[: 5 * RATE], quiet(3)])
    assert min(match_pieces(cut, menu)[0]) < 0.2
    noisy = np.concatenate([quiet(1), menu[: 4 * RATE], speech(4, 99), quiet(1)])
    scores, _, _ = match_pieces(noisy, menu)
    assert min(scores) < 0.2 and sum(s < 0.6 for s in scores) >= 6, scores
