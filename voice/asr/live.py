"""Live speech on one call: a `SpeechStream` per speaker, results gathered on the event loop.

    speech = CallSpeech(model, loop, origin=0.4, on_segment=store)  # store: as each one ends
    engine.listen(key, speech.sink("caller"), speech.sink("ivr"))
    speech.on_caller = call.on_speech      # barge-in and spoken menu choices
    speech.expect(phrases)                 # the grammar for the caller's next utterances
    speech.snapshot()                      # transcript so far, partials included (live view)
    segments = await speech.close()        # after hang-up: every final utterance

The caller's stream is the only one that can barge in or choose: what the IVR (or a collector)
says is transcribed on its own stream and never reaches the menu. Stream threads post events to
the loop with `call_soon_threadsafe`; everything else here runs on the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from voice.asr.events import Event, Final, Partial, SpeechStarted
from voice.asr.phrases import PhraseSet
from voice.asr.stream import SpeechStream
from voice.sip.tap import Sink

log = logging.getLogger(__name__)

CALLER = "caller"


@dataclass(frozen=True)
class Segment:
    """One utterance of the transcript: who, when (seconds into the recording), what."""

    speaker: str
    start: float
    end: float
    text: str
    confidence: float
    words: tuple[dict[str, Any], ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "speaker": self.speaker,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "confidence": round(self.confidence, 3),
            "words": list(self.words),
        }


class CallSpeech:
    def __init__(
        self,
        model: Any,
        loop: asyncio.AbstractEventLoop,
        *,
        speakers: Sequence[str] = (CALLER, "ivr"),
        transcribe: bool = True,
        origin: float = 0.0,
        on_segment: Callable[[Segment], None] | None = None,
        stream_factory: Callable[..., Any] = SpeechStream,
    ) -> None:
        self._loop = loop
        self.on_caller: Callable[[Event], None] | None = None
        self._on_segment = on_segment
        self.segments: list[Segment] = []
        self.partials: dict[str, str] = {}
        self.paused = False  # PCI: card details are being given; the recognisers hear silence
        self._closed = False
        self._streams = {
            name: stream_factory(model, name, self._post, origin=origin, transcribe=transcribe)
            for name in speakers
        }

    def sink(self, speaker: str) -> Sink:
        feed = self._streams[speaker].feed

        def hear(pcm: bytes) -> None:  # media thread: only queues
            feed(bytes(len(pcm)) if self.paused else pcm)

        return hear

    def expect(self, phrases: PhraseSet | None) -> None:
        """The caller's grammar from now on (None: transcript only)."""
        if CALLER in self._streams:
            self._streams[CALLER].set_phrases(phrases)

    def snapshot(self) -> dict[str, Any]:
        """The transcript so far, in time order, and each speaker's words in progress."""
        ordered = sorted(self.segments, key=lambda s: s.start)
        return {
            "segments": [s.as_dict() for s in ordered],
            "partial": {k: v for k, v in self.partials.items() if v},
        }

    async def close(self) -> list[Segment]:
        """Finish every stream (its last utterance included); the whole transcript in order."""
        if not self._closed:
            self._closed = True
            for stream in self._streams.values():
                await asyncio.to_thread(stream.close)
            # Events the stream threads posted before exiting are queued on the loop: run them.
            await asyncio.sleep(0)
            self.partials.clear()
        return sorted(self.segments, key=lambda s: s.start)

    # -- events ---------------------------------------------------------------------------------

    def _post(self, event: Event) -> None:  # stream threads
        try:
            self._loop.call_soon_threadsafe(self._take, event)
        except RuntimeError:  # loop closed at shutdown
            log.debug("dropped %r: loop closed", event)

    def _take(self, event: Event) -> None:
        if isinstance(event, Partial) and event.mode == "transcript":
            self.partials[event.stream] = event.text
        elif isinstance(event, Final) and event.mode == "transcript":
            self.partials.pop(event.stream, None)
            if event.text and not event.noise:
                segment = _segment(event)
                self.segments.append(segment)
                if self._on_segment is not None:
                    self._on_segment(segment)
        caller = event.stream == CALLER and self.on_caller is not None
        if caller and isinstance(event, SpeechStarted | Final):
            self.on_caller(event)


def _segment(final: Final) -> Segment:
    words = tuple(
        {"word": w.word, "start": w.start, "end": w.end, "conf": round(w.conf, 3)}
        for w in final.words
    )
    return Segment(final.stream, final.start, final.end, final.text, final.confidence, words)
