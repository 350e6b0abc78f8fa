"""Find a rendered clip inside a recording: normalised cross-correlation via FFT."""

from __future__ import annotations

import numpy as np


def best_match(recording: np.ndarray, template: np.ndarray) -> tuple[float, int]:
    """(peak normalised correlation in -1..1, offset in samples) of `template` in `recording`."""
    rec = recording.astype(np.float64)
    tpl = template.astype(np.float64)
    if len(tpl) == 0 or len(rec) < len(tpl):
        return 0.0, 0
    size = 1 << int(np.ceil(np.log2(len(rec) + len(tpl))))
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(tpl, size)), size)
    corr = corr[: len(rec) - len(tpl) + 1]
    # Energy of each recording window the template is compared against.
    csum = np.concatenate(([0.0], np.cumsum(rec * rec)))
    window = csum[len(tpl) :] - csum[: len(rec) - len(tpl) + 1]
    denom = np.sqrt(np.maximum(window, 1e-9) * float(np.dot(tpl, tpl)))
    score = corr / denom
    score[window < 1e-3 * float(np.dot(tpl, tpl))] = 0.0  # silence can't match speech
    best = int(np.argmax(score))
    return float(score[best]), best


CHUNK = 8000  # 0.5 s at 16 kHz: short enough that a jitter-buffer frame drop falls between chunks
SEARCH = 4000  # 0.25 s: how far a chunk may sit from where the previous chunk placed it


def match_in_order(
    recording: np.ndarray, template: np.ndarray, chunk: int = CHUNK
) -> tuple[float, float, int]:
    """Find `template` in `recording` chunk by chunk.

    A receiver's adaptive jitter buffer drops or repeats 20 ms frames, so a long prompt does not
    line up at one lag. Each 0.5 s chunk is located on its own; returns the worst chunk score,
    the largest jump between consecutive chunk offsets (seconds) and the first chunk's offset.
    """
    scores: list[float] = []
    offsets: list[int] = []
    for start in range(0, len(template) - chunk // 2, chunk):
        piece = template[start : start + chunk]
        if float(np.sqrt(np.mean(piece.astype(np.float64) ** 2))) < 100:
            continue  # a pause in the template says nothing about what was heard
        if offsets:
            # Words repeat ("one thousand ... dollars"): look only near where the last chunk was.
            low = max(0, offsets[-1] + start - SEARCH)
            score, at = best_match(
                recording[low : offsets[-1] + start + len(piece) + SEARCH], piece
            )
            at += low
        else:
            score, at = best_match(recording, piece)
        scores.append(score)
        offsets.append(at - start)
    if not scores:
        return 0.0, 0.0, 0
    jumps = np.abs(np.diff(offsets)) / 16000 if len(offsets) > 1 else np.zeros(1)
    return min(scores), float(jumps.max()), offsets[0]
