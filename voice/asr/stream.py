"""Live recognition of one direction of a call ("caller", "ivr", "agent").

    stream = SpeechStream(model, "caller", on_event, phrases=KOREAN)
    stream.feed(frame)      # media thread, every 20 ms: enqueue and return, never blocks
    stream.set_phrases(p)   # any thread: the grammar for the next utterances (None: off)
    stream.close()          # flush the last utterance's results, stop the thread

A worker thread per stream runs the endpointer (voice/asr/vad.py) and, inside utterances only,
Vosk: a transcript recogniser (no grammar, words with times) when `transcribe`, and a grammar
recogniser when phrases are set. Both hear the same utterances; each reports its own `Final`
(mode "transcript" or "grammar"), so a menu can take the choice while the transcript keeps every
word. The grammar one costs under a tenth of the transcript one (bench/asr.py), so running both
during a menu is cheap. Recognisers live as long as the stream (a grammar-free one takes ~60 ms
to build); Vosk's clock runs on across utterances, and each `_Decoder` maps it back to call time.

`on_event` is called on the worker thread; hand events to asyncio with
`lambda e: loop.call_soon_threadsafe(queue.put_nowait, e)`.

Times come from sample counts: sample 0 of the first `feed` is `origin` seconds into the call.
Audio dropped because the queue was full is replaced by silence of the same length, so later
times stay right.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voice.asr.events import Event, Final, Mode, Partial, SpeechStarted, Word
from voice.asr.memory import release_memory
from voice.asr.phrases import PhraseSet
from voice.asr.vad import FRAME_S, RATES, Audio, End, Endpointer, Start, VadConfig

log = logging.getLogger(__name__)

_CLOSE = object()


@dataclass(frozen=True)
class StreamStats:
    received_s: float  # audio handed to feed()
    dropped_chunks: int  # feed() calls refused because the queue was full
    dropped_s: float
    backlog: int  # chunks waiting in the queue now
    recognised_s: float  # audio handed to the recognisers (utterances with their pre-roll)
    utterances: int
    noise_utterances: int


class _Decoder:
    """One Vosk recogniser across a stream's utterances."""

    def __init__(self, recognizer: Any, mode: Mode, phrases: PhraseSet | None) -> None:
        self.recognizer = recognizer
        self.mode = mode
        self.phrases = phrases
        self.fed = 0  # samples given to the recogniser so far: Vosk's clock
        self._offset = 0
        self._texts: list[str] = []
        self._words: list[dict[str, Any]] = []
        self.last_partial = ""

    def begin(self, first_sample: int) -> None:
        self._offset = first_sample - self.fed  # call sample = Vosk sample + offset
        self._texts, self._words, self.last_partial = [], [], ""

    def accept(self, pcm: bytes) -> None:
        if self.recognizer.AcceptWaveform(pcm):
            self._take(self.recognizer.Result())
        self.fed += len(pcm) // 2

    def partial(self) -> str:
        text = json.loads(self.recognizer.PartialResult()).get("partial", "")
        return " ".join([*self._texts, text]).strip()

    def finish(self, rate: int, origin: float) -> tuple[str, tuple[Word, ...]]:
        self._take(self.recognizer.FinalResult())
        shift = self._offset / rate + origin
        words = tuple(
            Word(w["word"], round(w["start"] + shift, 3), round(w["end"] + shift, 3), w["conf"])
            for w in self._words
        )
        return " ".join(self._texts), words

    def _take(self, result_json: str) -> None:
        result = json.loads(result_json)
        if result.get("text"):
            self._texts.append(result["text"])
            self._words.extend(result.get("result", ()))


class SpeechStream:
    def __init__(
        self,
        model: Any,
        name: str,
        on_event: Callable[[Event], None],
        *,
        rate: int = 16000,
        transcribe: bool = True,
        phrases: PhraseSet | None = None,
        vad: VadConfig | None = None,
        queue_chunks: int = 250,  # 5 s of 20 ms frames
        feed_ms: int = 200,  # audio per Vosk call: 20 ms calls measured up to 12 % more CPU
        partial_interval_ms: int = 400,
        origin: float = 0.0,
    ) -> None:
        if rate not in RATES:
            raise ValueError(f"sample rate {rate} is not one of {RATES}")
        self.name = name
        self._model = model
        self._on_event = on_event
        self._rate = rate
        self._transcribe = transcribe
        self._phrases = phrases
        # (sample position, phrases) from set_phrases, for the worker to apply in stream order
        self._phrase_changes: deque[tuple[int, PhraseSet | None]] = deque()
        self._endpointer = Endpointer(rate, vad)
        self._frame_bytes = self._endpointer.frame_bytes
        self._feed_bytes = max(1, round(feed_ms / 1000 / FRAME_S)) * self._frame_bytes
        self._partial_bytes = round(partial_interval_ms / 1000 * rate) * 2
        self._origin = origin
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_chunks)
        # feed() side: touched by the media thread only
        self._received = 0
        self._dropped_chunks = 0
        self._dropped_samples = 0
        self._closed = False
        # worker side
        self._position = 0  # samples taken off the queue, gaps included
        self._carry = bytearray()
        self._pending = bytearray()
        self._since_partial = 0
        self._decoders: list[_Decoder] = []
        self._transcriber: _Decoder | None = None
        self._grammar: _Decoder | None = None
        self._utterances = 0
        self._noise = 0
        self._recognised = 0  # samples
        self._speech_start = 0
        self._fed_at = time.monotonic()  # when the chunk being worked on was fed
        self._exited = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"asr-{name}", daemon=True)
        self._thread.start()

    # -- any thread ----------------------------------------------------------------------------

    def feed(self, pcm: bytes) -> None:
        """Queue 16-bit mono PCM (any length, normally one 20 ms frame). Never blocks."""
        if self._closed:
            return
        if len(pcm) % 2:
            raise ValueError(f"PCM of {len(pcm)} bytes is not 16-bit samples")
        samples = len(pcm) // 2
        offset = self._received
        self._received += samples
        try:
            self._queue.put_nowait((offset, pcm, time.monotonic()))
        except queue.Full:
            self._dropped_chunks += 1
            self._dropped_samples += samples

    def set_phrases(self, phrases: PhraseSet | None) -> None:
        """Grammar for utterances that start in audio fed from now on; None turns it off.

        Set it before playing the menu prompt, so a caller who talks over the prompt is heard.
        """
        self._phrase_changes.append((self._received, phrases))

    def stats(self) -> StreamStats:
        return StreamStats(
            received_s=self._received / self._rate,
            dropped_chunks=self._dropped_chunks,
            dropped_s=self._dropped_samples / self._rate,
            backlog=self._queue.qsize(),
            recognised_s=self._recognised / self._rate,
            utterances=self._utterances,
            noise_utterances=self._noise,
        )

    def close(self, timeout: float = 10.0) -> bool:
        """Finish the utterance in progress, report it, stop the thread. True once stopped."""
        deadline = time.monotonic() + timeout
        if not self._closed:
            self._closed = True
            while not self._exited.is_set() and time.monotonic() < deadline:
                try:
                    self._queue.put(_CLOSE, timeout=0.1)
                    break
                except queue.Full:
                    continue
        return self._exited.wait(max(0.0, deadline - time.monotonic()))

    # -- worker thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self._transcribe:
                self._transcriber = self._decoder("transcript", None)
            while (item := self._queue.get()) is not _CLOSE:
                self._take(*item)
            self._fed_at = time.monotonic()  # the flush's lag is its own recognition only
            for event in self._endpointer.flush():
                self._handle(event)
        except Exception:
            log.exception("speech stream %s stopped", self.name)
        finally:
            # A recogniser holds tens of MB (its lazily composed graph grows with the audio it
            # decodes): free them here, not whenever the last reference to the stream goes
            # (a call's objects form cycles that only a full GC collects), and give the heap
            # back, or each call leaves its worker ~100 MB bigger (issue 15).
            self._decoders, self._transcriber, self._grammar = [], None, None
            release_memory()
            self._exited.set()

    def _decoder(self, mode: Mode, phrases: PhraseSet | None) -> _Decoder:
        import vosk

        if phrases is None:
            recognizer = vosk.KaldiRecognizer(self._model, self._rate)
        else:
            recognizer = vosk.KaldiRecognizer(self._model, self._rate, phrases.grammar_json())
        recognizer.SetWords(True)
        return _Decoder(recognizer, mode, phrases)

    def _take(self, offset: int, pcm: bytes, fed_at: float) -> None:
        self._fed_at = fed_at
        if offset > self._position:  # chunks dropped: keep the timeline with silence
            self._carry += bytes(2 * (offset - self._position))
        self._carry += pcm
        self._position = offset + len(pcm) // 2
        size = self._frame_bytes
        while len(self._carry) >= size:
            frame = bytes(self._carry[:size])
            del self._carry[:size]
            for event in self._endpointer.push(frame):
                self._handle(event)

    def _handle(self, event: Start | Audio | End) -> None:
        if isinstance(event, Audio):
            self._pending += event.audio
            if len(self._pending) >= self._feed_bytes:
                self._accept()
        elif isinstance(event, Start):
            self._start(event)
        else:
            self._end(event)

    def _start(self, event: Start) -> None:
        self._utterances += 1
        voice_sample = event.voice_frame * self._frame_bytes // 2
        while self._phrase_changes and self._phrase_changes[0][0] <= voice_sample:
            self._phrases = self._phrase_changes.popleft()[1]
        phrases = self._phrases
        if phrases is None:
            self._grammar = None
        elif self._grammar is None or self._grammar.phrases != phrases:
            self._grammar = self._decoder("grammar", phrases)
        self._decoders = [d for d in (self._transcriber, self._grammar) if d is not None]
        first_sample = event.first_frame * self._frame_bytes // 2
        for decoder in self._decoders:
            decoder.begin(first_sample)
        self._pending = bytearray(event.audio)
        self._since_partial = 0
        self._speech_start = event.voice_frame
        self._emit(SpeechStarted(self.name, self._utterances, self._at_frame(event.voice_frame)))

    def _accept(self) -> None:
        pcm = bytes(self._pending)
        self._pending.clear()
        for decoder in self._decoders:
            decoder.accept(pcm)
        self._recognised += len(pcm) // 2
        self._since_partial += len(pcm)
        if self._since_partial < self._partial_bytes:
            return
        self._since_partial = 0
        for decoder in self._decoders:
            text = decoder.partial()
            if text and text != decoder.last_partial:
                decoder.last_partial = text
                self._emit(Partial(self.name, self._utterances, decoder.mode, text))

    def _end(self, event: End) -> None:
        if self._pending:
            self._accept()
        self._noise += event.steady
        start, end = self._at_frame(self._speech_start), self._at_frame(event.speech_end)
        for decoder in self._decoders:
            text, words = decoder.finish(self._rate, self._origin)
            if event.steady:
                text, words = "", ()
            confidence = sum(w.conf for w in words) / len(words) if words else 0.0
            option = decoder.phrases.match(text) if decoder.phrases and text else None
            final = Final(
                self.name, self._utterances, decoder.mode, text, words, start, end,
                confidence, option, event.steady, time.monotonic() - self._fed_at,
            )  # fmt: skip
            self._emit(final)
        self._decoders = []

    def _at_frame(self, frame: int) -> float:
        return self._origin + frame * self._frame_bytes / 2 / self._rate

    def _emit(self, event: Event) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("speech stream %s: event handler failed on %r", self.name, event)
