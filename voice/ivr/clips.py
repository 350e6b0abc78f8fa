"""The clip library: one 16 kHz mono int16 clip per prompt key or say-vocabulary token.

Resolution order for a token: a studio recording `prompts_dir/<token>.wav`, then the on-disk
TTS cache, then a fresh TTS render (written to the cache). Calls only ever concatenate
clips, so no TTS engine runs while a caller is waiting once `prewarm()` has run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from voice.audio import SAMPLE_RATE, Rendered, Span
from voice.config import TtsConfig
from voice.ivr import say
from voice.ivr.prompts import PROMPTS
from voice.ivr.tts import TtsError, piper_render, resolve_engine

# Raised by the library, defined with the engines; the audio types come from voice/audio.py.
__all__ = ["SAMPLE_RATE", "Rendered", "Span", "TtsError"]

WORD_GAP_S = 0.060
SENTENCE_GAP_S = 0.300
PAUSE_S = 0.150
TRIM_MARGIN_S = 0.020
TRIM_THRESHOLD = int(0.01 * 32767)  # 1% of full scale
TTS_TIMEOUT_S = 60.0
PREWARM_THREADS = 2  # the target machine has 2 cores; TTS is CPU bound

_TOKEN_RE = re.compile(r"[a-z0-9_]+")
_SENTENCE_END = (".", "?", "!")


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.int16)


class ClipLibrary:
    """Clips by token, cached in memory and on disk; thread-safe."""

    def __init__(self, tts: TtsConfig, cache_dir: Path, prompts_dir: Path, company: str) -> None:
        self._tts = tts = resolve_engine(tts)  # piper's voice, or espeak-ng where it cannot
        self._prompts_dir = Path(prompts_dir)
        self._company = company
        # For piper the model file is the voice; the engine/voice folders keep caches of
        # different voices apart so a voice change never serves stale audio.
        self._voice_id = tts.piper_model if tts.engine == "piper" else tts.voice
        voice_dir = Path(tts.piper_model).stem if tts.engine == "piper" else tts.voice
        self._cache_dir = Path(cache_dir) / _safe_component(tts.engine) / _safe_component(voice_dir)
        self._clips: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @property
    def engine(self) -> str:
        """The engine that renders this library's clips: "piper" or "espeak-ng"."""
        return self._tts.engine

    # -- lookup ---------------------------------------------------------------------------

    def text(self, token: str) -> str:
        """The sentence or word spoken for `token`; KeyError if it is not a known token."""
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            raise KeyError(f"invalid clip token {token!r}: expected [a-z0-9_]+")
        if token in PROMPTS:
            return PROMPTS[token].format(company=self._company)
        if token in say.VOCABULARY:
            return say.text_of(token)
        raise KeyError(f"unknown clip token {token!r}: neither a prompt key nor a say word")

    def clip(self, token: str) -> np.ndarray:
        """The clip for `token` as int16 mono at SAMPLE_RATE."""
        return self._get(token)[0]

    def render(self, tokens: Sequence[str]) -> Rendered:
        """Concatenate clips, with a short gap between words and a longer one after sentences.

        The result knows what it says: `spans` has each clip's text and sample range, so the
        IVR's side of a transcript is the text we rendered, never recognised (issue 15)."""
        parts: list[np.ndarray] = []
        spans: list[Span] = []
        at = 0
        for i, token in enumerate(tokens):
            clip = self.clip(token)
            parts.append(clip)
            if token != say.PAUSE:
                spans.append(Span(self.text(token), at, at + len(clip)))
            at += len(clip)
            if i < len(tokens) - 1:
                parts.append(_silence(self._gap_after(token)))
                at += len(parts[-1])
        pcm = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        out = pcm.view(Rendered)
        out.spans = tuple(spans)
        return out

    def _gap_after(self, token: str) -> float:
        if token in PROMPTS and self.text(token).rstrip().endswith(_SENTENCE_END):
            return SENTENCE_GAP_S
        return WORD_GAP_S

    def prewarm(self, tokens: Iterable[str] | None = None) -> int:
        """Load (rendering if needed) every token; returns how many were rendered fresh."""
        wanted = list(PROMPTS) + sorted(say.VOCABULARY) if tokens is None else list(tokens)
        unique = list(dict.fromkeys(wanted))
        for token in unique:
            self.text(token)  # fail fast on a bad token before starting any work
        with ThreadPoolExecutor(max_workers=PREWARM_THREADS) as pool:
            return sum(fresh for _, fresh in pool.map(self._get, unique))

    # -- resolution -----------------------------------------------------------------------

    def _get(self, token: str) -> tuple[np.ndarray, bool]:
        text = self.text(token)
        with self._lock:
            cached = self._clips.get(token)
        if cached is not None:
            return cached, False
        fresh = False
        if token == say.PAUSE:
            data = _silence(PAUSE_S)
        else:
            studio = self._prompts_dir / f"{token}.wav"
            cache_file = self._cache_file(text)
            if studio.is_file():
                data = load_wav(studio)
            elif (data := _load_cached(cache_file)) is None:
                data = trim_silence(self._synthesize(text))
                _write_atomic(cache_file, data)
                fresh = True
        data.setflags(write=False)  # shared between calls: nobody may scribble on it
        with self._lock:
            # Two threads may race to load a token; everyone then shares the first copy.
            data = self._clips.setdefault(token, data)
        return data, fresh

    def _cache_file(self, text: str) -> Path:
        key = json.dumps([self._tts.engine, self._voice_id, self._tts.speed, text])
        return self._cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()}.wav"

    def _synthesize(self, text: str) -> np.ndarray:
        if self._tts.engine == "piper":
            return _piper(text, self._tts)
        return _espeak(text, self._tts)


# -- TTS engines ------------------------------------------------------------------------------


def _run(argv: list[str], text: str) -> bytes:
    # argv list, no shell; the text goes on stdin so it can never be parsed as an option.
    try:
        proc = subprocess.run(
            argv, input=text.encode(), capture_output=True, timeout=TTS_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise TtsError(f"TTS engine not found: {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise TtsError(f"{argv[0]} timed out after {TTS_TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise TtsError(f"{argv[0]} exited with {proc.returncode}: {err}")
    return proc.stdout


def _espeak(text: str, tts: TtsConfig) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise TtsError("tts.engine = 'espeak-ng' but espeak-ng is not installed")
    wav = _run([exe, "-v", tts.voice, "-s", str(tts.speed), "--stdout", "--stdin"], text)
    return _decode(wav)


def _piper(text: str, tts: TtsConfig) -> np.ndarray:
    pcm, rate = piper_render(text, tts)
    return _to_bridge_format(pcm[:, None], rate)


def _decode(wav: bytes) -> np.ndarray:
    # espeak-ng streams a WAV whose header has a placeholder length; libsndfile copes.
    data, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return _to_bridge_format(data, rate)


# -- audio helpers ----------------------------------------------------------------------------


def load_wav(path: Path) -> np.ndarray:
    """Any WAV (rate, channels, sample format) as int16 mono at SAMPLE_RATE."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return _to_bridge_format(data, rate)


def _to_bridge_format(data: np.ndarray, rate: int) -> np.ndarray:
    mono = data.mean(axis=1)
    mono = resample(mono, rate, SAMPLE_RATE)
    return (np.clip(mono, -1.0, 1.0) * 32767).round().astype(np.int16)


def resampled_length(n: int, rate_in: int, rate_out: int = SAMPLE_RATE) -> int:
    return round(n * rate_out / rate_in)


def resample(x: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
    """Linear-interpolation resampler, with a low-pass first when downsampling.

    Good enough for speech clips; the low-pass keeps energy above the new Nyquist
    frequency from folding back as audible aliasing.
    """
    if rate_in == rate_out or len(x) == 0:
        return x.astype(np.float32)
    if rate_out < rate_in:
        x = np.convolve(x, _lowpass(0.45 * rate_out / rate_in), mode="same")
    n_out = resampled_length(len(x), rate_in, rate_out)
    positions = np.arange(n_out) * (rate_in / rate_out)
    return np.interp(positions, np.arange(len(x)), x).astype(np.float32)


def _lowpass(cutoff: float, taps: int = 63) -> np.ndarray:
    """Windowed-sinc FIR; `cutoff` is a fraction of the input sample rate."""
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(taps)
    return h / h.sum()


def trim_silence(clip: np.ndarray) -> np.ndarray:
    """Drop leading/trailing near-silence, keeping a short margin so words don't clip."""
    loud = np.flatnonzero(np.abs(clip.astype(np.int32)) >= TRIM_THRESHOLD)
    if len(loud) == 0:
        return clip
    margin = round(TRIM_MARGIN_S * SAMPLE_RATE)
    start = max(0, int(loud[0]) - margin)
    end = min(len(clip), int(loud[-1]) + 1 + margin)
    return clip[start:end].copy()


def _load_cached(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        data, rate = sf.read(path, dtype="int16")
    except (OSError, sf.LibsndfileError):
        return None  # unreadable (e.g. truncated by a crash): render it again
    if rate != SAMPLE_RATE or data.ndim != 1:
        return None
    return data


def _write_atomic(path: Path, data: np.ndarray) -> None:
    # Several worker processes share the cache: a reader must never see a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".wav")
    os.close(fd)
    try:
        sf.write(tmp, data, SAMPLE_RATE, format="WAV", subtype="PCM_16")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _safe_component(name: str) -> str:
    """A config value made safe to use as one path component."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]", "_", name).strip(".")
    return cleaned or "_"
