"""A conference-bridge port that plays PCM from a buffer: the IVR's mouth.

`onFrameRequested` runs on pjmedia's clock thread every 20 ms. It only slices a pre-rendered
buffer under a lock, so playback can be queued, and cut short for barge-in, from any thread
without calling into pjlib.

The player is also the clock of what the IVR said: its `listener` hears every frame sent, and,
if it has `saying(spans)` and `said()` methods, is told just before the first frame of each
rendered prompt (voice/audio.py `Rendered`: text per clip) and just after its last one
(whole, cut or replaced), so it can time what we said without recognising it. All on the media
thread, in frame order; the listener must only queue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pjsua2 as pj

from voice.audio import FRAME_BYTES, FRAME_TIME, SAMPLE_RATE, Span

log = logging.getLogger(__name__)

_SILENCE = bytes(FRAME_BYTES)


class PlayedLog:
    """Which rendered prompt is going out (under the player's lock), as events for the listener:
    ("saying", spans) just before its first frame, ("said", ()) just after its last one, be it
    the end of the prompt, or the frame before it was cut (stop) or replaced (play)."""

    def __init__(self) -> None:
        self._next: tuple[Span, ...] = ()  # queued by play(), announced with its first frame
        self._saying = False
        self._events: list[tuple[str, tuple[Span, ...]]] = []

    def start(self, spans: tuple[Span, ...]) -> None:
        self.finish()
        self._next = spans

    def sent(self) -> None:
        """A frame of the current buffer goes out now."""
        if self._next:
            self._events.append(("saying", self._next))
            self._next, self._saying = (), True

    def finish(self) -> None:
        if self._saying:
            self._events.append(("said", ()))
        self._next, self._saying = (), False

    def take(self) -> list[tuple[str, tuple[Span, ...]]]:
        events, self._events = self._events, []
        return events


class PcmPlayer(pj.AudioMediaPort):
    def __init__(self, name: str) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0
        self._on_done: Callable[[], None] | None = None
        self._on_start: Callable[[], None] | None = None  # the buffer's first frame goes out
        self._silence = pj.ByteVector(_SILENCE)
        self.frames_played = 0
        # Hears every frame the player sends (speech or silence), on the media thread: the
        # IVR's side of the call for live transcription. It must only queue.
        self.listener: Callable[[bytes], None] | None = None
        self._told = PlayedLog()
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, SAMPLE_RATE, 1, int(FRAME_TIME * 1_000_000), 16)
        self.createPort(name, fmt)

    def play(
        self,
        pcm: np.ndarray,
        on_done: Callable[[], None],
        on_start: Callable[[], None] | None = None,
    ) -> None:
        """Replace whatever is playing with `pcm` (int16 mono at SAMPLE_RATE); `on_start` is
        called on the media thread with its first frame (a reply's latency ends there)."""
        spans = getattr(pcm, "spans", ())  # a rendered prompt says these; a tone says nothing
        data = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
        pad = (-len(data)) % FRAME_BYTES
        with self._lock:
            previous = self._on_done
            self._buffer, self._offset, self._on_done = data + bytes(pad), 0, on_done
            self._on_start = on_start
            self._told.start(spans)
        if previous is not None:
            previous()

    def stop(self) -> None:
        """Cut playback at once (barge-in, hang-up); the pending completion still fires."""
        with self._lock:
            previous = self._on_done
            self._buffer, self._offset, self._on_done = b"", 0, None
            self._on_start = None
            self._told.finish()
        if previous is not None:
            previous()

    @property
    def playing(self) -> bool:
        with self._lock:
            return self._offset < len(self._buffer)

    def onFrameRequested(self, frame: pj.MediaFrame) -> None:  # noqa: N802 (pjsua2 name)
        done = started = None
        try:
            with self._lock:
                if self._offset < len(self._buffer):
                    chunk = self._buffer[self._offset : self._offset + FRAME_BYTES]
                    self._offset += FRAME_BYTES
                    started, self._on_start = self._on_start, None
                    self._told.sent()
                    before = self._told.take()  # a cut prompt's end, this one's start
                    if self._offset >= len(self._buffer):
                        done, self._on_done = self._on_done, None
                        self._buffer, self._offset = b"", 0
                        self._told.finish()
                else:
                    chunk, before = None, self._told.take()
                after = self._told.take()  # the prompt this frame ended
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
            frame.buf = pj.ByteVector(chunk) if chunk is not None else self._silence
            frame.size = FRAME_BYTES
            if chunk is not None:
                self.frames_played += 1
            listener = self.listener
            if listener is not None:
                _tell(listener, before)
                listener(chunk if chunk is not None else _SILENCE)
                _tell(listener, after)
            if done is not None:
                done()
            if started is not None:  # last: a measurement must not cost the frame or `done`
                started()
        except Exception:  # never let an exception escape into the media thread
            log.exception("player frame failed")

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:  # noqa: N802
        # The player is only a source; received audio is tapped elsewhere (recording, ASR).
        return


def _tell(listener: Any, events: list[tuple[str, tuple[Span, ...]]]) -> None:
    for name, spans in events:
        method = getattr(listener, name, None)
        if method is not None:
            method(*((spans,) if name == "saying" else ()))
