"""Waveform peaks of a finalised recording: computed once from its audio, cached beside it.

A player draws one lane per channel (a bridged call: customer left, collector right; anything
else: one lane) from `buckets` peak levels per lane, each the largest absolute sample in its
slice of time, 0..1. Buckets inside a PCI pause are None: the file holds digital silence there,
and the gap is drawn as a gap, not as a flat line that looks like a quiet caller.

The cache is `<recording file>.peaks.json` in the recording's own folder: its name comes from
the stored (checked) recording path, never from a request. It records the SHA-256 of the audio
it was computed from, so a cache left from other audio is recomputed, never served.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from accounts.models import Recording
from recordings.paths import open_for_reading, path_for

VERSION = 1  # of the cache's layout: a new one is recomputed
BUCKETS_PER_SECOND = 20  # enough to see words and pauses in a call of a few minutes
MAX_BUCKETS = 4000  # a long call is drawn coarser, not bigger
BLOCK_FRAMES = 1 << 16  # read the audio in blocks: an hour-long call never sits in memory
SUFFIX = ".peaks.json"


class NoAudio(LookupError):
    """The recording has no finalised audio to draw (still recording, deleted, or missing)."""


def lane_names(recording: Recording) -> list[str]:
    if recording.channels == 2:
        return ["customer", "collector"]
    if recording.kind == "voicemail":
        return ["caller"]
    if recording.channels == 1:
        return ["call"]
    return [f"channel {i + 1}" for i in range(recording.channels)]


def cache_for(audio: Path) -> Path:
    """The peaks cache of the audio file at `audio` (a path from recordings.paths.path_for)."""
    return audio.with_name(audio.name + SUFFIX)


def peaks_of(recording: Recording, root: Path) -> dict[str, Any]:
    """The recording's peaks: from the cache when it was made from this audio, else computed
    (and cached). Raises NoAudio, or recordings.paths.UnsafePath for a bad stored path."""
    if recording.status not in ("final", "interrupted") or not recording.sha256:
        raise NoAudio(f"recording {recording.id} has no finalised audio ({recording.status})")
    cache = cache_for(path_for(recording, root))
    try:
        cached = json.loads(cache.read_text())
        if cached.get("version") == VERSION and cached.get("sha256") == recording.sha256:
            return dict(cached)
    except (OSError, ValueError):
        pass  # none yet, or torn: compute it
    try:
        fd = open_for_reading(path_for(recording, root))
    except OSError as exc:
        raise NoAudio(f"recording {recording.id}: audio file missing") from exc
    with os.fdopen(fd, "rb") as audio:
        levels, rate, frames = compute(audio, recording.pauses or [])
    result = {
        "version": VERSION,
        "recording_id": recording.id,
        "sha256": recording.sha256,
        "sample_rate": rate,
        "duration_s": frames / rate if rate else 0.0,
        "bucket_s": (frames / rate / len(levels[0])) if levels and levels[0] else 0.0,
        "pauses": list(recording.pauses or []),
        "lanes": [
            {"name": name, "peaks": lane}
            for name, lane in zip(lane_names(recording), levels, strict=False)
        ],
    }
    _write_atomically(cache, result)
    return result


def compute(
    audio: Any, pauses: list[dict[str, float]], buckets: int | None = None
) -> tuple[list[list[float | None]], int, int]:
    """(levels per channel, sample rate, frames) of an open audio file (FLAC or WAV)."""
    with sf.SoundFile(audio) as snd:
        rate, frames, channels = snd.samplerate, snd.frames, snd.channels
        count = buckets or max(1, min(MAX_BUCKETS, math.ceil(frames / rate * BUCKETS_PER_SECOND)))
        per = max(1, math.ceil(frames / count)) if frames else 1
        peaks = np.zeros((count, channels), dtype=np.float32)
        done = 0
        for block in snd.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
            # Segment the block at bucket boundaries and take each segment's maximum at once.
            first = -(-done // per) * per - done  # the first boundary inside the block
            starts = np.concatenate(([0], np.arange(first, len(block), per)))
            starts = np.unique(starts[starts < len(block)])
            level = np.maximum.reduceat(np.abs(block), starts, axis=0)
            index = ((done + starts) // per).clip(max=count - 1)
            peaks[index] = np.maximum(peaks[index], level)
            done += len(block)
    levels: list[list[float | None]] = []
    for ch in range(channels):
        lane: list[float | None] = [round(float(v), 3) for v in peaks[:, ch].clip(0.0, 1.0)]
        for pause in pauses:
            first = int(float(pause["start"]) * rate // per)
            last = math.ceil(float(pause["end"]) * rate / per)
            for i in range(max(0, first), min(count, last)):
                lane[i] = None
        levels.append(lane)
    return levels, rate, frames


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    # Two readers computing at once each rename a whole file into place: never a torn cache.
    fd, tmp = tempfile.mkstemp(prefix=".peaks-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
