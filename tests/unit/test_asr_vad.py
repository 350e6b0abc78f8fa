"""The endpointer on synthetic audio and espeak-ng speech: pure, no Vosk."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pytest

from tests.asr_audio import concat, espeak, frames, noise, silence, tone
from voice.asr.vad import Audio, End, Endpointer, Event, Start, VadConfig, frame_energy_db

RATE = 16000
FRAME_BYTES = 640


def run(pcm: np.ndarray, rate: int = RATE, **config: object) -> list[Event]:
    endpointer = Endpointer(rate, VadConfig(**config))  # type: ignore[arg-type]
    events: list[Event] = []
    for frame in frames(pcm, rate):
        events.extend(endpointer.push(frame))
    return events + endpointer.flush()


def utterances(events: Iterable[Event]) -> list[tuple[Start, End]]:
    starts = [e for e in events if isinstance(e, Start)]
    ends = [e for e in events if isinstance(e, End)]
    assert len(starts) == len(ends)
    return list(zip(starts, ends, strict=True))


def test_silence_is_nothing() -> None:
    assert run(silence(5)) == []


def test_speech_after_silence_is_one_utterance_with_preroll() -> None:
    phrase = espeak("잔액")
    events = run(concat(silence(2), phrase, silence(2)))
    [(start, end)] = utterances(events)
    speech_frames = len(phrase) // 320
    assert 100 <= start.voice_frame <= 100 + 10  # the phrase begins at 2.0 s = frame 100
    assert start.first_frame == start.voice_frame + 5 - 50  # 1 s of pre-roll before its trigger
    assert start.voice_frame < end.speech_end <= 100 + speech_frames
    assert end.frame - end.speech_end == 35  # 700 ms of non-speech ends it
    assert end.reason == "silence"
    assert not end.steady


def test_utterance_audio_is_contiguous_and_exact() -> None:
    pcm = concat(silence(1.5), espeak("마지막 청구서"), silence(1))
    events = run(pcm)
    [(start, end)] = utterances(events)
    handed = start.audio + b"".join(e.audio for e in events if isinstance(e, Audio))
    frame_data = b"".join(frames(pcm))
    assert handed == frame_data[start.first_frame * FRAME_BYTES : end.frame * FRAME_BYTES]
    audio_frames = [e.frame for e in events if isinstance(e, Audio)]
    assert audio_frames == list(range(start.voice_frame + 5, end.frame))


def test_two_phrases_are_two_utterances_and_preroll_never_repeats_audio() -> None:
    events = run(concat(silence(1), espeak("상담원"), silence(1.0), espeak("네"), silence(1)))
    (first_start, first_end), (second_start, _) = utterances(events)
    assert second_start.first_frame >= first_end.frame


@pytest.mark.parametrize(
    ("name", "pcm"),
    [
        ("white noise from the first frame", noise(6, rms=1000)),
        ("loud white noise after silence", concat(silence(2), noise(6, rms=8000))),
        ("440 Hz tone", concat(silence(1), tone(5))),
        ("50 Hz hum", concat(silence(1), tone(5, hz=50, amplitude=12000))),
    ],
)
def test_steady_noise_and_tones_never_make_a_speech_utterance(name: str, pcm: np.ndarray) -> None:
    events = run(pcm)
    assert all(end.steady for _, end in utterances(events)), name
    # and the floor stops them: no utterance runs on to the end of the audio
    assert all(end.reason == "silence" for _, end in utterances(events)), name


def test_speech_in_steady_noise_is_found_after_the_floor_settles() -> None:
    phrase = espeak("상담원", voice="ko").astype(np.int32)
    pcm = noise(6, rms=300).astype(np.int32)
    pcm[64000 : 64000 + len(phrase)] += phrase  # at 4.0 s
    events = run(np.clip(pcm, -32768, 32767).astype(np.int16))
    speech = [(s, e) for s, e in utterances(events) if not e.steady]
    [(start, end)] = speech
    assert 200 <= start.voice_frame <= 210


def test_8khz_frames() -> None:
    events = run(concat(silence(1), espeak("상담원", rate=8000), silence(1)), rate=8000)
    [(start, end)] = utterances(events)
    assert len(start.audio) == (start.voice_frame + 5 - start.first_frame) * 320
    assert not end.steady


def test_flush_ends_an_utterance_in_progress() -> None:
    events = run(concat(silence(1), espeak("마지막 청구서 잔액 상담원")))
    [(_, end)] = utterances(events)
    assert end.reason == "flush"


def scripted(pattern: str) -> Callable[[bytes], bool]:
    """A detector that says what `pattern` says, one character per frame ('#' voiced)."""
    it = iter(pattern)
    return lambda frame: next(it) == "#"


def pushed(pattern: str, **config: object) -> list[Event]:
    # Frames alternate in level so energy gates (floor, spread) see something speech-like.
    cfg = VadConfig(**{"floor_margin_db": 0.0, **config})  # type: ignore[arg-type]
    endpointer = Endpointer(RATE, cfg, detector=scripted(pattern))
    events: list[Event] = []
    for i in range(len(pattern)):
        level = 3000 if i % 2 else 300
        events.extend(endpointer.push(np.full(320, level, dtype=np.int16).tobytes()))
    return events + endpointer.flush()


def test_state_machine_with_a_scripted_detector() -> None:
    pattern = "..##.#####" + "#.#" + "." * 35 + "#####" + "." * 5
    events = pushed(pattern, start_frames=5, end_ms=700, preroll_ms=100)
    (s1, e1), (s2, e2) = utterances(events)
    assert (s1.first_frame, s1.voice_frame) == (5, 5)
    assert (e1.speech_end, e1.frame, e1.reason) == (13, 48, "silence")
    assert (s2.voice_frame, e2.reason) == (48, "flush")
    assert s2.first_frame == 48  # pre-roll holds only frames not handed over before


def test_max_length_cuts_and_restarts() -> None:
    events = pushed("#" * 130, start_frames=2, max_utterance_ms=1000)
    ends = [e for e in events if isinstance(e, End)]
    assert [e.reason for e in ends] == ["max_length", "max_length", "flush"]
    assert [e.frame for e in ends] == [50, 100, 130]  # 50 frames (1 s) each, pre-roll included


def test_deterministic() -> None:
    pcm = concat(silence(1), espeak("마지막 결제"), silence(1), noise(2, rms=2000))
    assert run(pcm) == run(pcm)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^sample rate 44100 is not one of \(8000, 16000\)$"):
        Endpointer(44100)
    with pytest.raises(ValueError, match=r"^frame of 320 bytes, expected 640$"):
        Endpointer(RATE).push(bytes(320))
    with pytest.raises(ValueError, match=r"^vad.end_ms: 50 is outside 100..5000$"):
        Endpointer(RATE, VadConfig(end_ms=50))


def test_frame_energy() -> None:
    assert frame_energy_db(bytes(640)) == 0.0
    full = np.full(320, 32767, dtype=np.int16).tobytes()
    assert 90.0 < frame_energy_db(full) < 90.4
