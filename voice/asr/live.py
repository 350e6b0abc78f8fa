"""Live speech on one call: a `SpeechStream` per speaker, results gathered on the event loop.

    speech = CallSpeech(model, loop, origin=0.4, on_segment=store)  # store: as each one ends
    engine.listen(key, speech.sink("caller"), speech.said())
    speech.on_caller = call.on_speech      # barge-in and spoken menu choices
    speech.expect(phrases)                 # the grammar for the caller's next utterances
    speech.snapshot()                      # transcript so far, partials included (live view)
    segments = await speech.close()        # after hang-up: every final utterance

The caller's stream is the only one that can barge in or choose: what a collector says is
transcribed on its own stream and never reaches the menu. What the IVR says is not recognised
at all: it is the text we rendered (voice/ivr/clips.py), timed by the player that sent it
(voice/sip/player.py), stored as the "ivr" speaker's utterances with source "rendered" (the
recognised ones are "live"). That is half the recognisers of an inbound call. Stream threads
and the player post to the loop with `call_soon_threadsafe`; everything else here runs on it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from voice.asr.events import Event, Final, Partial, SpeechStarted
from voice.asr.phrases import PhraseSet
from voice.asr.stream import SpeechStream
from voice.audio import Sink, Span
from voice.telemetry import ASR_DROPPED_SECONDS, ASR_LAG_SECONDS

log = logging.getLogger(__name__)

CALLER = "caller"
IVR = "ivr"
LIVE = "live"  # a Segment's source: recognised from the call's audio as it went
RENDERED = "rendered"  # the text we rendered and played: never recognised


@dataclass(frozen=True)
class Segment:
    """One utterance of the transcript: who, when (seconds into the recording), what."""

    speaker: str
    start: float
    end: float
    text: str
    confidence: float
    words: tuple[dict[str, Any], ...]
    source: str = LIVE

    def as_dict(self) -> dict[str, Any]:
        return {
            "speaker": self.speaker,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "confidence": round(self.confidence, 3),
            "words": list(self.words),
            "source": self.source,
        }


class CallSpeech:
    def __init__(
        self,
        model: Any,
        loop: asyncio.AbstractEventLoop,
        *,
        speakers: Sequence[str] = (CALLER,),
        transcribe: bool = True,
        origin: float = 0.0,
        on_segment: Callable[[Segment], None] | None = None,
        on_closed: Callable[[str | None], None] | None = None,
        stream_factory: Callable[..., Any] = SpeechStream,
        live: bool = True,
    ) -> None:
        self._loop = loop
        # A live call's recognition lag and dropped audio go to /metrics; a recording
        # transcribed afterwards (voice/asr/after.py) is fed all at once and lags by design.
        self._live = live
        self.on_caller: Callable[[Event], None] | None = None
        self._on_segment = on_segment
        # Told, on a thread, after close: None when the live transcript is whole, else why not
        # (accounts/transcription.py queues an after-call job then).
        self._on_closed = on_closed
        self._transcribe = transcribe
        self.shortfall: str | None = None
        self.segments: list[Segment] = []
        self.partials: dict[str, str] = {}
        self.paused = False  # PCI: card details are being given; the recognisers hear silence
        self._closed = False
        self._origin = origin
        self._streams = {
            name: stream_factory(model, name, self._post, origin=origin, transcribe=transcribe)
            for name in speakers
        }
        self._said: list[SaidTrack] = []

    def sink(self, speaker: str) -> Sink:
        feed = self._streams[speaker].feed

        def hear(pcm: bytes) -> None:  # media thread: only queues
            feed(bytes(len(pcm)) if self.paused else pcm)

        return hear

    def said(self, speaker: str = IVR) -> SaidTrack:
        """The player's listener for what `speaker` (the IVR) plays: stored as rendered text."""
        track = SaidTrack(speaker, self._origin, self._said_segment, lambda: self.paused)
        self._said.append(track)
        return track

    def expect(self, phrases: PhraseSet | None) -> None:
        """The caller's grammar from now on (None: transcript only)."""
        if CALLER in self._streams:
            self._streams[CALLER].set_phrases(phrases)

    def heard_until(self) -> float:
        """Call time up to which the caller's audio has been received: now, on the clock of
        the times a `Final` carries (the recogniser reports them later)."""
        return self._origin + self._streams[CALLER].stats().received_s

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
            for track in self._said:
                track.close()  # the prompt the IVR was saying at hang-up, as far as it went
            stopped = {name: await asyncio.to_thread(s.close) for name, s in self._streams.items()}
            if self._live and (dropped := sum(s.stats().dropped_s for s in self._streams.values())):
                ASR_DROPPED_SECONDS.inc(dropped)
            # Events the stream threads posted before exiting are queued on the loop: run them.
            await asyncio.sleep(0)
            self.partials.clear()
            self.on_caller = None  # the call's objects hold each other: let them go at once
            if self._on_closed is not None:
                self.shortfall = self._shortfall(stopped)
                try:
                    await asyncio.to_thread(self._on_closed, self.shortfall)
                except Exception:
                    log.exception("live transcript's end not recorded")
        return sorted(self.segments, key=lambda s: s.start)

    def _shortfall(self, stopped: dict[str, bool]) -> str | None:
        """Why the live transcript is not the whole call's, or None."""
        if not self._transcribe:
            return "no live transcription"
        for name, stream in self._streams.items():
            stats = stream.stats()
            if not stopped[name]:
                return f"{name}: live recognition did not finish in time"
            if stats.dropped_chunks:
                return f"{name}: {stats.dropped_s:.1f} s of audio dropped (recogniser behind)"
            if stats.received_s <= 0:
                return f"{name}: no audio reached the live recogniser"
        return None

    # -- events ---------------------------------------------------------------------------------

    def _post(self, event: Event) -> None:  # stream threads
        try:
            self._loop.call_soon_threadsafe(self._take, event)
        except RuntimeError:  # loop closed at shutdown
            log.debug("dropped %r: loop closed", event)

    def _take(self, event: Event) -> None:
        if self._live and isinstance(event, Final):
            ASR_LAG_SECONDS.labels(event.mode).observe(event.lag)
        if isinstance(event, Partial) and event.mode == "transcript":
            self.partials[event.stream] = event.text
        elif isinstance(event, Final) and event.mode == "transcript":
            self.partials.pop(event.stream, None)
            if event.text and not event.noise:
                self._add(_segment(event))
        caller = event.stream == CALLER and self.on_caller is not None
        if caller and isinstance(event, SpeechStarted | Final):
            self.on_caller(event)

    def _said_segment(self, segment: Segment) -> None:  # media thread (or the loop, at close)
        try:
            self._loop.call_soon_threadsafe(self._add, segment)
        except RuntimeError:  # loop closed at shutdown
            log.debug("dropped %r: loop closed", segment)

    def _add(self, segment: Segment) -> None:
        self.segments.append(segment)
        if self._on_segment is not None:
            self._on_segment(segment)


class SaidTrack:
    """What the IVR says, from its player (voice/sip/player.py): no recogniser, just the clock.

    Called with every frame the player sends (the call's clock, in samples since `origin`),
    told `saying(spans)` before a rendered prompt's first frame and `said()` after its last.
    Each prompt becomes one utterance: its clips' text, one "word" per clip (a prompt sentence,
    or a word of a spoken amount) with the clip's exact times and confidence 1.0. A prompt cut
    short (barge-in, hang-up) keeps the clips that had started; the last one ends at the cut.
    A prompt that played while the recording was paused (PCI) is not kept, as the recognisers
    would have heard silence.
    """

    def __init__(
        self,
        speaker: str,
        origin: float,
        emit: Callable[[Segment], None],
        paused: Callable[[], bool],
        rate: int = 16000,
    ) -> None:
        self.speaker = speaker
        self._origin = origin
        self._emit = emit
        self._paused = paused
        self._rate = rate
        self._lock = threading.Lock()  # the media thread and, at close, the loop
        self.samples = 0  # sent so far: the clock
        self._paused_at = -1  # the clock at the last frame sent while paused
        self._current: tuple[tuple[Span, ...], int] | None = None  # spans, first sample
        self._closed = False

    def __call__(self, pcm: bytes) -> None:
        with self._lock:
            if self._paused():
                self._paused_at = self.samples
            self.samples += len(pcm) // 2

    def saying(self, spans: tuple[Span, ...]) -> None:
        with self._lock:
            self._flush()
            if not self._closed:
                self._current = (spans, self.samples)

    def said(self) -> None:
        with self._lock:
            self._flush()

    def close(self) -> None:
        with self._lock:
            self._flush()
            self._closed = True

    def _flush(self) -> None:
        current, self._current = self._current, None
        if current is None:
            return
        spans, first = current
        sent = self.samples - first
        if self._paused_at >= first or sent <= 0:
            return
        at = first / self._rate + self._origin
        words = tuple(
            {
                "word": span.text,
                "start": round(at + span.start / self._rate, 3),
                "end": round(at + min(span.end, sent) / self._rate, 3),
                "conf": 1.0,
            }
            for span in spans
            if span.start < sent
        )
        if words:
            text = " ".join(w["word"] for w in words)
            start, end = words[0]["start"], words[-1]["end"]
            self._emit(Segment(self.speaker, start, end, text, 1.0, words, RENDERED))


def _segment(final: Final) -> Segment:
    words = tuple(
        {"word": w.word, "start": w.start, "end": w.end, "conf": round(w.conf, 3)}
        for w in final.words
    )
    return Segment(final.stream, final.start, final.end, final.text, final.confidence, words)
