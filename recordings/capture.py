"""From the WAV a call writes as it runs to the immutable FLAC that compliance plays.

The call worker's recorder is pjmedia's WAV writer: it appends 16-bit PCM as the call goes and
writes the RIFF sizes only when it closes. A process killed mid-call leaves sizes of 0, so the
WAV is read here by its data chunk, never trusting the sizes. Finalising writes FLAC next to it
(lossless), hashes it, and only then deletes the WAV: at every moment one complete copy exists.
If the FLAC cannot be written (disk full), the WAV itself is kept as the recording.

`WavWriter` is the other writer: for audio whose channels must stay apart (a bridged call,
customer left and collector right) or that comes from a tap (a voicemail). Each channel's sink
only queues a 20 ms frame (it runs on pjmedia's clock thread); the writer's own thread appends
interleaved frames to a WAV laid out like pjmedia's (sizes 0 until closed), so the same repair
and finalising apply.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import struct
import threading
from collections.abc import Callable
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


WRITE_INTERVAL = 0.1  # seconds between the writer thread's appends
MAX_SKEW_FRAMES = 25  # a channel this far behind the others is padded with silence (0.5 s)
MAX_BACKLOG_FRAMES = 3000  # 60 s of 20 ms frames queued per channel before frames are dropped


class WavWriter:
    """16-bit PCM WAV of `channels` channels, fed frame by frame from the media thread.

    The media clock ticks every port of the bridge in the same pass, so the channels' frames
    arrive in step; a channel whose tap stops (its call left the bridge) is padded with silence
    so the others keep their timeline. `max_seconds` caps the file (a voicemail's length).
    While `paused` (PCI), silence is written instead of audio.
    """

    def __init__(
        self,
        path: Path,
        channels: int,
        rate: int = 16000,
        frame_bytes: int = 640,
        max_seconds: float | None = None,
    ) -> None:
        self.path = path
        self.channels = channels
        self.rate = rate
        self.paused = False
        self.dropped = 0
        self.frames = 0  # frames written per channel
        self._frame_bytes = frame_bytes
        self._silence = bytes(frame_bytes)
        self._max_frames = (
            None if max_seconds is None else int(max_seconds * rate * 2 / frame_bytes)
        )
        self._queues: list[collections.deque[bytes]] = [
            collections.deque() for _ in range(channels)
        ]
        self._closed = False
        self._stop = threading.Event()
        self._file = path.open("wb")
        self._file.write(_wav_header(channels, rate))
        self._file.flush()
        self._thread = threading.Thread(target=self._run, name=f"wav-{path.stem}", daemon=True)
        self._thread.start()

    def sink(self, channel: int) -> Callable[[bytes], None]:
        """The frame sink of `channel` (0 = left): only queues, safe on the media thread."""
        queue = self._queues[channel]

        def feed(pcm: bytes) -> None:
            if self._closed or self.full:
                return
            if len(queue) >= MAX_BACKLOG_FRAMES:
                self.dropped += 1
                return
            queue.append(pcm)

        return feed

    @property
    def seconds(self) -> float:
        return self.frames * self._frame_bytes / 2 / self.rate

    @property
    def full(self) -> bool:
        return self._max_frames is not None and self.frames >= self._max_frames

    def close(self) -> float:
        """Write what is queued, then the WAV sizes; the recorded seconds. Blocks briefly."""
        if not self._closed:
            self._closed = True
            self._stop.set()
            self._thread.join(10)
            try:
                self._file.close()
            finally:
                _fix_wav_sizes(self.path, self.frames * self._frame_bytes * self.channels)
        return self.seconds

    def _run(self) -> None:
        try:
            while not self._stop.wait(WRITE_INTERVAL):
                self._drain(final=False)
            self._drain(final=True)
        except Exception:  # disk full, closed file: the call goes on, the loss is measured later
            log.exception("%s: writing stopped", self.path.name)

    def _drain(self, *, final: bool) -> None:
        lengths = [len(q) for q in self._queues]
        count = min(lengths)
        if final or max(lengths) - count > MAX_SKEW_FRAMES:
            count = max(lengths)
        if self._max_frames is not None:
            count = min(count, self._max_frames - self.frames)
        if count <= 0:
            return
        columns = []
        for queue in self._queues:
            frames = [queue.popleft() if queue else self._silence for _ in range(count)]
            if self.paused:
                frames = [self._silence] * count
            columns.append(np.frombuffer(b"".join(frames), dtype="<i2"))
        block = np.stack(columns, axis=1) if self.channels > 1 else columns[0]
        self._file.write(np.ascontiguousarray(block, dtype="<i2").tobytes())
        self._file.flush()
        self.frames += count


def _wav_header(channels: int, rate: int) -> bytes:
    """A 44-byte PCM WAV header with zero sizes, as a writer that has not closed leaves it."""
    align = 2 * channels
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * align, align, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 0)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + (b"data" + struct.pack("<I", 0))
    )
