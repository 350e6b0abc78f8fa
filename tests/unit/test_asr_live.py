"""CallSpeech: which stream's events reach the menu, and how the transcript is kept.

The streams are stand-ins that emit given events from their own thread, as SpeechStream's
worker thread does; tests/integration/test_spoken_menu.py runs the real ones on real calls."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from voice.asr.events import Event, Final, Partial, SpeechStarted, Word
from voice.asr.live import CallSpeech, Segment


class ScriptedStream:
    def __init__(self, model: Any, name: str, on_event: Any, **options: Any) -> None:
        self.name, self.on_event, self.options = name, on_event, options
        self.fed: list[bytes] = []
        self.phrases: list[Any] = []
        self.closed = False

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


def final(stream: str, text: str, start: float, mode: str = "transcript", **kw: Any) -> Final:
    words = tuple(Word(w, start + i * 0.3, start + i * 0.3 + 0.25, 0.8) for i, w in
                  enumerate(text.split()))  # fmt: skip
    return Final(stream, 1, mode, text, words, start, start + 1.0, 0.8, **kw)  # type: ignore[arg-type]


async def test_only_the_callers_stream_reaches_the_menu() -> None:
    streams: dict[str, ScriptedStream] = {}

    def factory(model: Any, name: str, on_event: Any, **options: Any) -> ScriptedStream:
        streams[name] = ScriptedStream(model, name, on_event, **options)
        return streams[name]

    stored: list[Segment] = []
    speech = CallSpeech(object(), asyncio.get_running_loop(), origin=0.5,
                        on_segment=stored.append, stream_factory=factory)  # fmt: skip
    to_menu: list[Event] = []
    speech.on_caller = to_menu.append
    assert sorted(streams) == ["caller", "ivr"]
    assert streams["caller"].options == {"origin": 0.5, "transcribe": True}
    speech.sink("caller")(b"\x01\x02" * 4)
    speech.paused = True  # PCI: card digits never reach the recogniser
    speech.sink("caller")(b"\x03\x04" * 4)
    speech.paused = False
    assert streams["caller"].fed == [b"\x01\x02" * 4, bytes(8)]

    ivr_start = SpeechStarted("ivr", 1, 0.6)
    streams["ivr"].emit(ivr_start, Partial("ivr", 1, "transcript", "for your"),
                        final("ivr", "for your balance", 0.6))  # fmt: skip
    caller_start = SpeechStarted("caller", 1, 3.0)
    grammar = final("caller", "잔액", 3.0, mode="grammar", option="balance")
    streams["caller"].emit(caller_start, Partial("caller", 1, "transcript", "잔"))
    await asyncio.sleep(0.01)
    assert speech.snapshot()["partial"] == {"caller": "잔"}
    streams["caller"].emit(final("caller", "잔액", 3.0), grammar)
    await asyncio.sleep(0.01)

    # The IVR's own speech never reaches the menu: no barge-in, no choice.
    assert to_menu == [caller_start, final("caller", "잔액", 3.0), grammar]
    # Transcript-mode finals become segments, in time order, stored as they come.
    snapshot = speech.snapshot()
    assert [(s["speaker"], s["text"]) for s in snapshot["segments"]] == [
        ("ivr", "for your balance"),
        ("caller", "잔액"),
    ]
    assert snapshot["partial"] == {}
    assert [s.text for s in stored] == ["for your balance", "잔액"]
    assert stored[1].words[0] == {"word": "잔액", "start": 3.0, "end": 3.25, "conf": 0.8}
    segments = await speech.close()
    assert all(s.closed for s in streams.values())
    assert [s.speaker for s in segments] == ["ivr", "caller"]


async def test_noise_and_empty_finals_are_not_transcript() -> None:
    streams: dict[str, ScriptedStream] = {}

    def factory(model: Any, name: str, on_event: Any, **options: Any) -> ScriptedStream:
        streams[name] = ScriptedStream(model, name, on_event, **options)
        return streams[name]

    speech = CallSpeech(object(), asyncio.get_running_loop(), speakers=("caller",),
                        transcribe=False, stream_factory=factory)  # fmt: skip
    speech.expect(None)
    assert streams["caller"].phrases == [None]
    noisy = Final("caller", 1, "transcript", "", (), 1.0, 2.0, 0.0, None, True)
    streams["caller"].emit(noisy, final("caller", "", 3.0))
    await asyncio.sleep(0.01)
    assert speech.snapshot() == {"segments": [], "partial": {}}
    assert await speech.close() == []
