"""Find a rendered clip inside a recording: normalised cross-correlation via FFT."""

from __future__ import annotations

import numpy as np


def best_match(recording: np.ndarray, template: np.ndarray) -> tuple[float, int]:
    """(peak normalised correlation in -1..1, offset in samples) of `template` in `recording`."""
    score = _score_curve(recording, template)
    if score.size == 0:
        return 0.0, 0
    best = int(np.argmax(score))
    return float(score[best]), best


def _score_curve(recording: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Normalised correlation of `template` at every offset of `recording` (empty: nothing to
    find, as a silent template would divide 0 by 0)."""
    rec = recording.astype(np.float64)
    tpl = template.astype(np.float64)
    if len(tpl) == 0 or len(rec) < len(tpl) or float(np.dot(tpl, tpl)) < 1.0:
        return np.zeros(0)
    size = 1 << int(np.ceil(np.log2(len(rec) + len(tpl))))
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(tpl, size)), size)
    corr = corr[: len(rec) - len(tpl) + 1]
    # Energy of each recording window the template is compared against.
    csum = np.concatenate(([0.0], np.cumsum(rec * rec)))
    window = csum[len(tpl) :] - csum[: len(rec) - len(tpl) + 1]
    denom = np.sqrt(np.maximum(window, 1e-9) * float(np.dot(tpl, tpl)))
    score = corr / denom
    score[window < 1e-3 * float(np.dot(tpl, tpl))] = 0.0  # silence can't match speech
    return score


CHUNK = 8000  # 0.5 s at 16 kHz: short enough that a jitter-buffer frame drop falls between chunks
SEARCH = 4000  # 0.25 s: how far a chunk may sit from where the previous chunk placed it
MIN_PIECE = 2000  # 125 ms: the shortest piece a chunk is split into around a discontinuity
GOOD = 0.9  # a piece below this is split to see whether a frame drop/repeat sits inside it
STALLED = 0.6  # a piece this bad near the last lag is looked for up to STALL later
STALL = 48000  # 3 s


def match_in_order(
    recording: np.ndarray, template: np.ndarray, chunk: int = CHUNK
) -> tuple[float, float, int]:
    """Find `template` in `recording` chunk by chunk.

    A receiver's adaptive jitter buffer drops or repeats 20 ms frames, so a long prompt does not
    line up at one lag. Each 0.5 s chunk is located on its own; returns the worst chunk score,
    the largest jump between consecutive chunk offsets (seconds) and the first chunk's offset.
    """
    scores, jump, offset = match_pieces(recording, template, chunk)
    return (min(scores) if scores else 0.0), jump, offset


def match_pieces(
    recording: np.ndarray, template: np.ndarray, chunk: int = CHUNK
) -> tuple[list[float], float, int]:
    """As `match_in_order`, with every chunk's score (in template order).

    Only a piece that matched (STALLED or better) moves the lag the next piece is looked for
    near: a damaged piece's best spot is noise, and following it lost the whole rest of a
    prompt that was heard fine (CI, 2026-12-03: 10 ms steps of lag in the first 3 s, then 11 s
    heard whole, scored 0.05-0.3 piece after piece).
    """
    scores: list[float] = []
    offsets: list[int] = []  # the lag of each piece that matched
    lag = _anchor(recording, template, chunk)
    for start in range(0, len(template) - chunk // 2, chunk):
        piece = template[start : start + chunk]
        if _silent(piece):
            continue  # a pause in the template says nothing about what was heard
        score, at = _locate(recording, piece, start, lag)
        scores.append(score)
        if score >= STALLED:
            lag = at - start
            offsets.append(lag)
    if not scores:
        return [], 0.0, 0
    jumps = np.abs(np.diff(offsets)) / 16000 if len(offsets) > 1 else np.zeros(1)
    return scores, float(jumps.max()), (offsets[0] if offsets else 0)


def _anchor(recording: np.ndarray, template: np.ndarray, chunk: int) -> int | None:
    """Lag of the template's earliest clear occurrence in the recording, or None.

    Not the best one: a prompt said twice (the menu, then the menu again after "no input")
    matches twice, and a 20 ms glitch in the first piece of the first saying made the cut-off
    second saying win, so every later piece was looked for past the end of the recording (CI,
    2026-12-03). Of the first 6 spoken pieces, the one placed clearly earliest gives the lag.
    """
    found: list[tuple[int, int]] = []  # (position in the recording, lag)
    pieces = 0
    for start in range(0, len(template) - chunk // 2, chunk):
        piece = template[start : start + chunk]
        if _silent(piece):
            continue
        curve = _score_curve(recording, piece)
        clear = np.flatnonzero(curve >= GOOD)
        if clear.size:
            first = int(clear[0])
            at = first + int(np.argmax(curve[first : first + MIN_PIECE]))
            found.append((at, at - start))
        pieces += 1
        if pieces == 6:
            break
    return min(found)[1] if found else None


def _locate(
    recording: np.ndarray, piece: np.ndarray, start: int, lag: int | None
) -> tuple[float, int]:
    """Best (score, position) of `piece`; near `lag` when known, else anywhere.

    Not near the last lag, playback may have stalled (a starved media clock delays the rest of
    the prompt; measured in CI). A stall only ever delays, so the piece is then looked for up to
    STALL later, and taken there only when it is clearly there: a weak best spot seconds away is
    noise, and moving the lag to it lost the rest of a prompt heard whole (CI, 2026-12-03).
    """
    if lag is None:
        score, at = best_match(recording, piece)
        if score >= GOOD or len(piece) // 2 < MIN_PIECE:
            return score, at
        lag = at - start
    score, at = _near(recording, piece, start, lag)
    if score >= STALLED:
        return score, at
    low = max(0, lag + start - SEARCH)
    wide, wide_at = best_match(recording[low : lag + start + len(piece) + STALL], piece)
    return (wide, wide_at + low) if wide >= GOOD else (score, at)


def _near(recording: np.ndarray, piece: np.ndarray, start: int, lag: int) -> tuple[float, int]:
    """Best (score, position) of `piece` within SEARCH of `lag` (words repeat: "one thousand
    ... dollars" must not match elsewhere).

    A piece spanning a 20 ms frame drop or repeat matches neither side well, so a weak piece is
    split in halves, each located on its own; the piece scores as its worse half. The lag is
    thus piecewise constant, as a jitter buffer makes it, and the bar per piece stays GOOD.
    """
    low = max(0, lag + start - SEARCH)
    score, at = best_match(recording[low : lag + start + len(piece) + SEARCH], piece)
    at += low
    half = len(piece) // 2
    if score >= GOOD or half < MIN_PIECE:
        return score, at
    first, second = piece[:half], piece[half:]
    if _silent(first) or _silent(second):
        # A pause in one half says nothing about what was heard: the other half is the piece.
        loud, offset = (second, half) if _silent(first) else (first, 0)
        loud_score, loud_at = _locate(recording, loud, start + offset, at - start)
        return max(score, loud_score), loud_at - offset
    first_score, first_at = _locate(recording, first, start, at - start)
    second_score, _ = _locate(recording, second, start + half, first_at - start)
    return max(score, min(first_score, second_score)), first_at


def _silent(piece: np.ndarray) -> bool:
    return float(np.sqrt(np.mean(piece.astype(np.float64) ** 2))) < 100


def received(report: dict) -> str:
    """What the UA's receive side counted (`tests/peers/pjua.py` sample_stream), for a failure
    message: where a damaged recording was damaged (lost packets, or frames the UA's jitter
    buffer discarded or found empty) and when the counters moved (seconds into the recording)."""
    moves = [(t, v) for t, kind, v in report.get("events", []) if kind == "stream"]
    return f"received {report.get('stream')}, moved at {moves}"
