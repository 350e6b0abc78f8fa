"""Test audio for the speech path: Korean phrases from espeak-ng, silence, noise, tones.

All int16 mono numpy arrays at 8 or 16 kHz. Speech is rendered once per (text, voice, speed,
pitch, rate) and cached as WAV under the temp dir, so a test run pays espeak-ng once.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from voice.asr.vad import FRAME_S
from voice.ivr.clips import resample

CACHE = Path(tempfile.gettempdir()) / "collections-voice-asr-audio"


def espeak(
    text: str, *, voice: str = "ko+klatt", speed: int = 160, pitch: int = 50, rate: int = 16000
) -> np.ndarray:
    """`text` spoken by espeak-ng, resampled to `rate`."""
    key = f"{text}|{voice}|{speed}|{pitch}|{rate}".encode()
    path = CACHE / f"{hashlib.sha256(key).hexdigest()[:24]}.wav"
    if path.exists():
        return sf.read(path, dtype="int16")[0]
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (make test installs it)")
    argv = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
    wav = subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout
    data, source_rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    pcm = (np.clip(resample(data.mean(axis=1), source_rate, rate), -1, 1) * 32767).round()
    pcm = pcm.astype(np.int16)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.wav")
    sf.write(tmp, pcm, rate, subtype="PCM_16")
    tmp.replace(path)  # atomic: parallel runs never read half a file
    return pcm


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(round(seconds * rate), dtype=np.int16)


def noise(seconds: float, rate: int = 16000, rms: float = 1000.0, seed: int = 7) -> np.ndarray:
    """White Gaussian noise."""
    x = np.random.default_rng(seed).standard_normal(round(seconds * rate)) * rms
    return np.clip(x, -32768, 32767).astype(np.int16)


def tone(
    seconds: float, rate: int = 16000, hz: float = 440.0, amplitude: float = 8000.0
) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * amplitude).astype(np.int16)


def concat(*parts: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.int16) for p in parts])


def frames(pcm: np.ndarray, rate: int = 16000) -> list[bytes]:
    """20 ms frames, the last one zero-padded."""
    n = round(rate * FRAME_S)
    pad = (-len(pcm)) % n
    data = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)]).astype(np.int16).tobytes()
    return [data[i : i + 2 * n] for i in range(0, len(data), 2 * n)]
