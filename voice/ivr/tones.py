"""Generated tones: the voicemail beep, ringback while a collector is rung, confirmations.

Pure numpy, int16 mono at the bridge rate; rendered on demand (microseconds) and never cached.
"""

from __future__ import annotations

import numpy as np

from voice.audio import SAMPLE_RATE

LEVEL = 8000  # int16 peak: clearly audible, far from clipping after a codec


def tone(freqs: tuple[float, ...], seconds: float, level: int = LEVEL) -> np.ndarray:
    """`freqs` summed for `seconds`, with 5 ms fades so no click is heard."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    wave = sum(np.sin(2 * np.pi * f * t) for f in freqs) / max(1, len(freqs))
    fade = min(len(t) // 2, int(SAMPLE_RATE * 0.005))
    envelope = np.ones(len(t))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        envelope[:fade], envelope[-fade:] = ramp, ramp[::-1]
    return (level * wave * envelope).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(SAMPLE_RATE * seconds), dtype=np.int16)


def beep() -> np.ndarray:
    """The voicemail beep: 1 kHz, 0.5 s."""
    return tone((1000.0,), 0.5)


def ringback(seconds: float) -> np.ndarray:
    """North American ringback (440 + 480 Hz, 2 s on, 4 s off) lasting `seconds`."""
    cycle = np.concatenate([tone((440.0, 480.0), 2.0), silence(4.0)])
    repeats = int(np.ceil(seconds / 6.0))
    return np.tile(cycle, max(1, repeats))[: int(SAMPLE_RATE * seconds)]


def confirm() -> np.ndarray:
    """Two short high beeps: an outcome code was stored."""
    return np.concatenate([tone((1400.0,), 0.12), silence(0.08), tone((1400.0,), 0.12)])


def error() -> np.ndarray:
    """One low buzz: an outcome code was refused."""
    return tone((350.0, 440.0), 0.6)
