"""Finalising a call's WAV into FLAC: killed writers, torn samples, a full disk."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import soundfile

from recordings.capture import finalise, read_growing_wav
from tests.tinyfs import tiny_fs

RATE = 16000


def pjmedia_wav(path: Path, samples: np.ndarray, *, closed: bool, extra: bytes = b"") -> None:
    """A WAV as pjmedia's writer leaves it: sizes written only when it is closed."""
    data = samples.astype("<i2").tobytes() + extra
    riff, size = (36 + len(data), len(data)) if closed else (0, 0)
    header = (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
        + b"data"
        + struct.pack("<I", size)
    )
    path.write_bytes(header + data)


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def test_a_killed_writers_wav_becomes_a_flac_with_every_sample(tmp_path: Path) -> None:
    audio = tone(2.5)
    wav = tmp_path / "call-1-rec-1.wav"
    pjmedia_wav(wav, audio, closed=False, extra=b"\x01")  # sizes 0, and half a sample
    result = finalise(wav, tmp_path / "call-1-rec-1.flac")
    assert result.format == "flac" and result.problem is None
    assert not wav.exists()
    stored, rate = soundfile.read(result.path, dtype="int16")
    assert rate == RATE and np.array_equal(stored, audio)
    assert result.duration_s == 2.5
    assert result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert result.bytes == result.path.stat().st_size


def test_a_closed_wav_reads_the_same(tmp_path: Path) -> None:
    audio = tone(0.3)
    pjmedia_wav(tmp_path / "a.wav", audio, closed=True)
    samples, rate, channels = read_growing_wav(tmp_path / "a.wav")
    assert (rate, channels) == (RATE, 1) and np.array_equal(samples[:, 0], audio)


def test_not_a_wav_is_an_error_that_deletes_nothing(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"\x00" * 100)
    try:
        finalise(junk, tmp_path / "junk.flac")
    except ValueError as exc:
        assert "not a WAV" in str(exc)
    else:
        raise AssertionError("garbage accepted")
    assert junk.exists()


def test_a_full_disk_keeps_the_wav_repaired_as_the_recording(tmp_path: Path) -> None:
    audio = tone(1.5)  # 48 KB of PCM in a 64 KB filesystem: no room for a FLAC beside it
    with tiny_fs(tmp_path / "tiny", 64) as tiny:
        wav = tiny / "call-2-rec-2.wav"
        pjmedia_wav(wav, audio, closed=False)
        noise = np.random.default_rng(1).integers(-30000, 30000, 8000).astype(np.int16)
        (tiny / "filler.raw").write_bytes(noise.tobytes())  # what else filled the disk
        result = finalise(wav, tiny / "call-2-rec-2.flac")
        assert result.format == "wav" and result.path == wav
        assert "FLAC could not be written" in (result.problem or "")
        assert not (tiny / "call-2-rec-2.flac").exists()
        assert not list(tiny.glob("*.tmp"))
        stored, rate = soundfile.read(wav, dtype="int16")  # sizes fixed: any player reads it
        assert rate == RATE and np.array_equal(stored, audio)
        assert result.sha256 == hashlib.sha256(wav.read_bytes()).hexdigest()
