"""CallSpeech: which stream's events reach the menu, and how the transcript is kept.

The streams are stand-ins that emit given events from their own thread, as SpeechStream's
worker thread does; tests/integration/test_spoken_menu.py runs the real ones on real calls."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from voice.asr.events import Event, Final, Partial, SpeechStarted, Word
from voice.asr.live import CallSpeech, Segment
from voice.asr.stream import StreamStats
from voice.audio import Span
from voice.telemetry import ASR_DROPPED_SECONDS, ASR_LAG_SECONDS


class ScriptedStream:
    def __init__(self, model: Any, name: str, on_event: Any, **options: Any) -> None:
        self.name, self.on_event, self.options = name, on_event, options
        self.fed: list[bytes] = []
        self.phrases: list[Any] = []
        self.closed = False
        self.dropped = 0  # chunks, as if the queue had been full

    def feed(self, pcm: bytes) -> None:
        self.fed.append(pcm)

    def set_phrases(self, phrases: Any) -> None:
        self.phrases.append(phrases)

    def emit(self, *events: Event) -> None:
        thread = threading.Thread(target=lambda: [self.on_event(e) for e in events])
        thread.start()
        thread.join()

    def close(self) -> bool:
        self.closed = True
        return True

    def stats(self) -> StreamStats:
        return StreamStats(len(self.fed) * 0.02, self.dropped, self.dropped * 0.02, 0, 0.0, 0, 0)


def scripted_into(streams: dict[str, ScriptedStream]) -> Any:
    """A CallSpeech stream_factory whose streams are kept in `streams` by name."""

    def factory(model: Any, name: str, on_event: Any, **options: Any) -> ScriptedStream:
        streams[name] = ScriptedStream(model, name, on_event, **options)
        return streams[name]

    return factory


def final(stream: str, text: str, start: float, mode: str = "transcript", **kw: Any) -> Final:
    words = tuple(Word(w, start + i * 0.3, start + i * 0.3 + 0.25, 0.8) for i, w in
                  enumerate(text.split()))  # fmt: skip
    return Final(stream, 1, mode, text, words, start, start + 1.0, 0.8, **kw)  # type: ignore[arg-type]


async def test_only_the_callers_stream_reaches_the_menu() -> None:
    streams: dict[str, ScriptedStream] = {}
    factory = scripted_into(streams)

    stored: list[Segment] = []
    speech = CallSpeech(object(), asyncio.get_running_loop(), origin=0.5,
                        speakers=("caller", "agent"), on_segment=stored.append,
                        stream_factory=factory)  # fmt: skip
    to_menu: list[Event] = []
    speech.on_caller = to_menu.append
    assert sorted(streams) == ["agent", "caller"]
    assert streams["caller"].options == {"origin": 0.5, "transcribe": True}
    speech.sink("caller")(b"\x01\x02" * 4)
    speech.paused = True  # PCI: card digits never reach the recogniser
    speech.sink("caller")(b"\x03\x04" * 4)
    speech.paused = False
    assert streams["caller"].fed == [b"\x01\x02" * 4, bytes(8)]

    agent_start = SpeechStarted("agent", 1, 0.6)
    streams["agent"].emit(agent_start, Partial("agent", 1, "transcript", "for your"),
                          final("agent", "for your balance", 0.6))  # fmt: skip
    caller_start = SpeechStarted("caller", 1, 3.0)
    grammar = final("caller", "잔액", 3.0, mode="grammar", option="balance")
    streams["caller"].emit(caller_start, Partial("caller", 1, "transcript", "잔"))
    await asyncio.sleep(0.01)
    assert speech.snapshot()["partial"] == {"caller": "잔"}
    streams["caller"].emit(final("caller", "잔액", 3.0), grammar)
    await asyncio.sleep(0.01)

    # The other side's speech never reaches the menu: no barge-in, no choice.
    assert to_menu == [caller_start, final("caller", "잔액", 3.0), grammar]
    # Transcript-mode finals become segments, in time order, stored as they come.
    snapshot = speech.snapshot()
    assert [(s["speaker"], s["text"]) for s in snapshot["segments"]] == [
        ("agent", "for your balance"),
        ("caller", "잔액"),
    ]
    assert snapshot["partial"] == {}
    assert [s.text for s in stored] == ["for your balance", "잔액"]
    assert stored[1].words[0] == {"word": "잔액", "start": 3.0, "end": 3.25, "conf": 0.8}
    segments = await speech.close()
    assert all(s.closed for s in streams.values())
    assert [s.speaker for s in segments] == ["agent", "caller"]
    assert {s.source for s in segments} == {"live"}


def lag_count(mode: str) -> tuple[float, float]:
    """(results, seconds) of voice_asr_lag_seconds{mode} so far in this process."""
    samples = {s.name: s.value for m in ASR_LAG_SECONDS.labels(mode).collect() for s in m.samples}
    return samples["voice_asr_lag_seconds_count"], samples["voice_asr_lag_seconds_sum"]


def dropped_seconds() -> float:
    return next(s.value for m in ASR_DROPPED_SECONDS.collect() for s in m.samples
                if s.name.endswith("_total"))  # fmt: skip


async def test_a_live_calls_lag_and_dropped_audio_reach_the_metrics_an_after_call_ones_do_not(
) -> None:  # fmt: skip
    for live, counted in ((True, 1), (False, 0)):
        streams: dict[str, ScriptedStream] = {}
        speech = CallSpeech(object(), asyncio.get_running_loop(), speakers=("caller",),
                            stream_factory=scripted_into(streams), live=live)  # fmt: skip
        before = lag_count("transcript"), lag_count("grammar"), dropped_seconds()
        streams["caller"].emit(final("caller", "잔액", 1.0, lag=0.4),
                               final("caller", "잔액", 1.0, mode="grammar", lag=2.5))  # fmt: skip
        streams["caller"].dropped = 50  # a second of the call's audio refused: queue full
        await asyncio.sleep(0.01)
        await speech.close()
        transcript, grammar = lag_count("transcript"), lag_count("grammar")
        assert transcript[0] - before[0][0] == counted
        assert transcript[1] - before[0][1] == pytest.approx(0.4 * counted)
        assert grammar[0] - before[1][0] == counted
        assert grammar[1] - before[1][1] == pytest.approx(2.5 * counted)
        assert dropped_seconds() - before[2] == pytest.approx(1.0 * counted)


async def test_noise_and_empty_finals_are_not_transcript() -> None:
    streams: dict[str, ScriptedStream] = {}
    factory = scripted_into(streams)

    speech = CallSpeech(object(), asyncio.get_running_loop(), speakers=("caller",),
                        transcribe=False, stream_factory=factory)  # fmt: skip
    speech.expect(None)
    assert streams["caller"].phrases == [None]
    noisy = Final("caller", 1, "transcript", "", (), 1.0, 2.0, 0.0, None, True)
    streams["caller"].emit(noisy, final("caller", "", 3.0))
    await asyncio.sleep(0.01)
    assert speech.snapshot() == {"segments": [], "partial": {}}
    assert await speech.close() == []


FRAME = bytes(640)  # 20 ms at 16 kHz


async def test_the_ivr_side_is_what_the_player_said_not_recognised() -> None:
    streams: dict[str, ScriptedStream] = {}
    factory = scripted_into(streams)

    stored: list[Segment] = []
    speech = CallSpeech(object(), asyncio.get_running_loop(), origin=0.5,
                        on_segment=stored.append, stream_factory=factory)  # fmt: skip
    assert sorted(streams) == ["caller"]  # no recogniser for the IVR's side
    said = speech.said()
    menu = (Span("For your balance, press 1.", 0, 16000), Span("one", 20800, 24000))
    player = threading.Thread(target=lambda: [
        said(FRAME) for _ in range(10)  # 0.2 s of silence before the prompt
    ] + [said.saying(menu)] + [said(FRAME) for _ in range(80)] + [said.said()])  # fmt: skip
    player.start()
    player.join()
    # Cut by the caller 0.3 s in: the clip that had started is kept, ending at the cut.
    said.saying((Span("Goodbye.", 0, 9600), Span("later", 12000, 16000)))
    for _ in range(15):
        said(FRAME)
    said.said()
    await asyncio.sleep(0.01)
    whole, cut = stored
    assert whole == Segment(
        "ivr", 0.7, 2.2, "For your balance, press 1. one", 1.0,
        ({"word": "For your balance, press 1.", "start": 0.7, "end": 1.7, "conf": 1.0},
         {"word": "one", "start": 2.0, "end": 2.2, "conf": 1.0}),
        "rendered",
    )  # fmt: skip
    assert (cut.text, cut.start, cut.end) == ("Goodbye.", 2.3, 2.6)
    assert cut.as_dict()["source"] == "rendered"
    assert [s.text for s in await speech.close()] == [whole.text, cut.text]


async def test_said_prompt_in_progress_at_hang_up_and_pci_pause() -> None:
    stored: list[Segment] = []
    speech = CallSpeech(object(), asyncio.get_running_loop(), speakers=(),
                        on_segment=stored.append)  # fmt: skip
    said = speech.said()
    said.saying((Span("Card number, please.", 0, 8000),))
    speech.paused = True  # PCI: what plays during the pause is not kept
    said(FRAME)
    speech.paused = False
    said(FRAME)
    said.said()
    said.saying((Span("Your balance is", 0, 16000),))
    for _ in range(25):
        said(FRAME)
    # Hang-up: the engine drops the listener, so no said(); close keeps what went out.
    segments = await speech.close()
    assert [(s.text, s.start, s.end) for s in segments] == [("Your balance is", 0.04, 0.54)]
    said.saying((Span("late", 0, 320),))  # nothing after close
    said(FRAME)
    said.said()
    await asyncio.sleep(0.01)
    assert len(stored) == 1
