"""From the WAV a call writes as it runs to the immutable FLAC that compliance plays.

The call worker's recorder is pjmedia's WAV writer: it appends 16-bit PCM as the call goes and
writes the RIFF sizes only when it closes. A process killed mid-call leaves sizes of 0, so the
WAV is read here by its data chunk, never trusting the sizes. Finalising writes FLAC next to it
(lossless), hashes it, and only then deletes the WAV: at every moment one complete copy exists.
If the FLAC cannot be written (disk full), the WAV itself is kept as the recording.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

log = logging.getLogger(__name__)

HEADER_SCAN = 4096  # bytes searched for the data chunk (pjmedia writes it at offset 36)


@dataclass(frozen=True)
class Finalised:
    path: Path  # the file now holding the recording (FLAC, or the WAV if FLAC failed)
    format: str
    duration_s: float
    bytes: int
    sha256: str
    problem: str | None = None  # why the WAV was kept, if it was


def read_growing_wav(path: Path) -> tuple[np.ndarray, int, int]:
    """(int16 samples shaped (frames, channels), rate, channels) from a WAV of any state."""
    with path.open("rb") as f:
        head = f.read(HEADER_SCAN)
        fmt = head.find(b"fmt ")
        data = head.find(b"data")
        if head[:4] != b"RIFF" or fmt < 0 or data < 0:
            raise ValueError(f"{path.name}: not a WAV file")
        _tag, channels, rate, _rate_bytes, _align, bits = struct.unpack_from(
            "<HHIIHH", head, fmt + 8
        )
        if bits != 16 or channels < 1:
            raise ValueError(f"{path.name}: expected 16-bit PCM, got {bits}-bit")
        f.seek(data + 8)
        raw = f.read()
    usable = len(raw) - len(raw) % (2 * channels)  # a torn last sample is dropped
    samples = np.frombuffer(raw[:usable], dtype="<i2").reshape(-1, channels)
    return samples, rate, channels


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def finalise(wav: Path, flac: Path) -> Finalised:
    """Turn the call's WAV into `flac`; keep the WAV (repaired) if the FLAC cannot be written."""
    samples, rate, channels = read_growing_wav(wav)
    duration = len(samples) / rate
    partial = flac.with_name(flac.name + ".tmp")
    try:
        soundfile.write(partial, samples, rate, format="FLAC", subtype="PCM_16")
        with partial.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, flac)  # atomic: a reader never sees half a FLAC under its name
    except (OSError, RuntimeError, soundfile.LibsndfileError) as exc:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        problem = f"kept as WAV: FLAC could not be written ({exc})"
        log.error("%s: %s", wav.name, problem)
        _fix_wav_sizes(wav, len(samples) * 2 * channels)
        return Finalised(wav, "wav", duration, wav.stat().st_size, sha256_of(wav), problem)
    result = Finalised(flac, "flac", duration, flac.stat().st_size, sha256_of(flac))
    wav.unlink()
    return result


def _fix_wav_sizes(wav: Path, data_bytes: int) -> None:
    """Write the RIFF and data sizes a killed writer never wrote (in place: no new space)."""
    with wav.open("r+b") as f:
        head = f.read(HEADER_SCAN)
        data = head.find(b"data")
        f.seek(4)
        f.write(struct.pack("<I", data + 8 + data_bytes - 8))
        f.seek(data + 4)
        f.write(struct.pack("<I", data_bytes))
        f.truncate(data + 8 + data_bytes)
