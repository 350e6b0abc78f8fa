"""A call's media: its recordings and live speech, opened, paused for PCI and closed in one place.

- the mono recording of the whole call (pjsua2's recorder on the call's port, a FLAC once the
  engine reports it closed: `Recorder.closed`);
- live speech on the caller (`CallSpeech`), timed against that recording;
- while a collector is bridged, the two-channel recording (customer left, collector right,
  from the two calls' taps) and the bridge's recognisers;
- a voicemail's mono WAV from the customer's tap.

`CallMedia.pause()` silences all of them at once (card details are being given) and marks the
gap on each recording. The recordings' counters (`recordings_total`, `_incomplete_total`,
`_failed_total`) are counted here and nowhere else. "No recording must not mean no call": a
recording that cannot be opened is logged and the call goes on (its note says what was kept).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accounts.idblocks import IdBlocks
from accounts.models import utcnow
from accounts.retry import DB_TRIES, retry_db
from accounts.write_behind import WriteBehind
from recordings.book import RecordingBook
from recordings.capture import WavWriter
from voice.asr.live import CallSpeech, Segment
from voice.asr.phrases import PhraseSet
from voice.audio import FRAME_BYTES
from voice.calls.call import SipCall
from voice.calls.journal import FLUSH_WAIT, CallLog
from voice.sip.engine import SipEngine

log = logging.getLogger(__name__)
# A recording row's open, close or PCI mark is retried DB_TRIES times while the database
# refuses (SQLite's lock held past its busy timeout on a saturated machine): not retried, 3 of
# 80 calls at once lost their recording on this machine.
# Closing one (its FLAC is made, its row says so) is retried far longer, in the background
# (the caller has hung up): a soak at 60 calls up on SQLite (2026-12-03) gave up on 5 rows
# after DB_TRIES, leaving finished recordings "in progress" until the worker's next start.
CLOSE_TRIES = DB_TRIES + 75  # ~5-10 min at retry_pause's 4 s cap plus the busy timeout
CLOSE_WAIT = 600.0  # s a close waits for its row, still behind the call (as long as CLOSE_TRIES)


@dataclass
class ActiveRecording:
    recording_id: int
    wav: Path
    started: float  # monotonic
    ended: float | None = None


@dataclass
class BridgeRecording:
    """What a PCI pause must silence while a customer and a collector are bridged."""

    recording_id: int | None
    writer: WavWriter | None
    speech: CallSpeech | None
    started: float  # monotonic


@dataclass
class Recorder:
    """One worker's recordings and recognisers: what every call's media is made with, and the
    mono recordings still open (by engine key: the engine reports their closing by key, which
    may come after the call's script has finished)."""

    engine: SipEngine
    book: RecordingBook
    metrics: collections.Counter[str]
    model: Any = None  # the Vosk model; None: no live speech
    phrases: PhraseSet | None = None
    live: bool = False  # the call's words recognised as it goes (asr.live)
    transcripts: bool = False  # what the IVR said kept as its text too (asr.transcripts)
    # A recording's CallSpeech `on_closed` (accounts/transcription.py: an after-call job when
    # the live transcript is not whole), by recording id.
    speech_closed: Callable[[int | None], Any] = lambda _recording_id: None
    # Recording ids reserved ahead (accounts/idblocks.py): a row then goes behind the call,
    # and `rows` keeps its write-behind number until the row is closed, which waits for it.
    ids: IdBlocks | None = None
    writes: WriteBehind | None = None
    rows: dict[int, int] = field(default_factory=dict)
    open: dict[int, ActiveRecording] = field(default_factory=dict)
    _closing: set[asyncio.Task[None]] = field(default_factory=set)

    def ended(self, key: int) -> None:
        """The call hung up: its recording's length is known."""
        if rec := self.open.get(key):
            rec.ended = time.monotonic()

    def closed(self, key: int) -> None:
        """The engine closed the call's WAV: finalise it (FLAC, hash) in the background."""
        if rec := self.open.pop(key, None):
            task = asyncio.create_task(self.finalise(rec))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close_remaining(self) -> None:
        """After the engine stopped, every WAV is closed: finalise what no event reported."""
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=30)
        for key in list(self.open):
            await self.finalise(self.open.pop(key))

    async def finalise(self, rec: ActiveRecording) -> None:
        seconds = (rec.ended or time.monotonic()) - rec.started
        await self.close(rec.recording_id, lambda: None, seconds)

    async def close(
        self, recording_id: int, before: Callable[[], object], seconds: float | None
    ) -> None:
        """`before()` (a writer's close) then the book's, counted; never raises."""
        try:
            await asyncio.to_thread(before)
            await self.row_written(recording_id, CLOSE_WAIT, keep=False)
            closed = await retry_db(
                CLOSE_TRIES, self.book.close, recording_id, call_seconds=seconds
            )
        except Exception:
            log.exception("recording %d could not be finalised", recording_id)
            self.metrics["recordings_failed_total"] += 1
            return
        self.metrics["recordings_total"] += 1
        if closed.loss:
            self.metrics["recordings_incomplete_total"] += 1
            log.error("recording %d incomplete: %s", recording_id, closed.loss)

    async def row_written(self, recording_id: int, timeout: float, *, keep: bool = True) -> None:
        """Wait (up to `timeout`) for a row handed to the write-behind to be in."""
        seq = self.rows.get(recording_id) if keep else self.rows.pop(recording_id, None)
        if (
            seq is not None
            and self.writes is not None
            and not await self.writes.through(seq, timeout)
        ):
            log.warning("recording %d: its row still waits for the database", recording_id)


class CallMedia:
    """One call's recordings and live speech (module docstring)."""

    def __init__(self, recorder: Recorder, log: CallLog) -> None:
        self.recorder = recorder
        self.log = log
        self.call_id = log.call_id
        self._on_segment = log.segment_writer  # recording id -> CallSpeech.on_segment
        self.recording: ActiveRecording | None = None
        self.speech: CallSpeech | None = None  # the caller's, on the customer's call
        self.bridge: BridgeRecording | None = None

    @property
    def engine(self) -> SipEngine:
        return self.recorder.engine

    async def record(self, call: SipCall) -> None:
        """The whole call, mono, by pjsua2's recorder."""
        book, key = self.recorder.book, call.key
        try:
            recording_id, wav = await self.open_row("call", 1)
        except Exception:
            log.exception("call %d: recording could not be opened", self.call_id)
            return
        self.recording = rec = ActiveRecording(recording_id, wav, time.monotonic())
        self.recorder.open[key] = rec
        if not await self.engine.start_recording(key, str(wav)):
            self.recorder.open.pop(key, None)  # the call ended first
            self.recording = None
            await self.recorder.row_written(recording_id, CLOSE_WAIT, keep=False)
            try:
                await retry_db(DB_TRIES, book.close, recording_id)
            except Exception:
                # Raised, this left the call in progress for good with no note (soak call
                # 7305). The row stays open; start-up's repair closes what was left open.
                log.exception("call %d: recording %d not closed", self.call_id, recording_id)

    async def listen(self, call: SipCall) -> None:
        """The caller into the recogniser and what the IVR plays as text, both timed against
        the call's recording."""
        recorder = self.recorder
        if recorder.model is None:
            return
        rec = self.recording
        started = rec.started if rec is not None else time.monotonic()
        recording_id = rec.recording_id if rec is not None else None
        speech = CallSpeech(
            recorder.model,
            asyncio.get_running_loop(),
            speakers=("caller",),  # the IVR's side is the text it rendered: speech.said()
            transcribe=recorder.live,
            origin=time.monotonic() - started,
            on_segment=self._on_segment(recording_id),
            on_closed=recorder.speech_closed(recording_id),  # after-call job?
        )
        self.speech = speech
        call.attach_speech(speech, recorder.phrases)
        said = speech.said() if recorder.transcripts else None
        if not await self.engine.listen(call.key, speech.sink("caller"), said):
            self.speech = None
            await speech.close()

    async def open_row(self, kind: str, channels: int) -> tuple[int, Path]:
        """A new recording row of the call: its id and the WAV to record into. Handed to the
        write-behind under an id reserved ahead (the caller waits for no database), else
        written now, after the call's own row."""
        recorder = self.recorder
        ids, writes = recorder.ids, recorder.writes
        rid = None
        if ids is not None and writes and self.log.behind:
            # Behind the call's row: a row written now could come before it (a foreign key
            # failure, the recording lost), so wait for ids rather than write it directly.
            rid = await ids.take_waiting("recordings")
        if rid is None:
            await self.log.flushed()
            return await retry_db(
                DB_TRIES, recorder.book.open, self.call_id, kind=kind, channels=channels
            )
        at = utcnow()
        row, wav = await asyncio.to_thread(
            recorder.book.plan, self.call_id, rid, at, kind=kind, channels=channels
        )
        self.log.hand_over("open_recording", at=at, **row)
        recorder.rows[rid] = self.log.last
        return rid, wav

    async def stop_listening(self) -> bool:
        """The caller's last utterances out; True if there was live speech."""
        speech, self.speech = self.speech, None
        if speech is None:
            return False
        await speech.close()
        return True

    # -- a bridged collector --------------------------------------------------------------------

    async def open_stereo(self) -> tuple[int | None, WavWriter | None]:
        try:
            recording_id, wav = await self.open_row("call", 2)
            return recording_id, WavWriter(wav, 2, frame_bytes=FRAME_BYTES)
        except Exception:
            log.exception("call %d: bridged recording could not be opened", self.call_id)
            return None, None

    def bridge_speech(self, recording_id: int | None, caller: bool) -> CallSpeech | None:
        """The collector's words as "agent" (and the customer's as "caller" when the call has
        no IVR transcript already); None without a model or with transcripts off."""
        if self.recorder.model is None or not self.recorder.live:
            return None
        return CallSpeech(
            self.recorder.model,
            asyncio.get_running_loop(),
            speakers=("caller", "agent") if caller else ("agent",),
            transcribe=True,
            on_segment=self._on_segment(recording_id),
            on_closed=self.recorder.speech_closed(recording_id),
        )

    async def close_stereo(self, recording_id: int, writer: WavWriter, seconds: float) -> None:
        await self.recorder.close(recording_id, writer.close, seconds)

    # -- a voicemail ------------------------------------------------------------------------------

    async def open_voicemail(self, max_seconds: float) -> tuple[int, WavWriter]:
        recording_id, wav = await self.open_row("voicemail", 1)
        return recording_id, WavWriter(wav, 1, frame_bytes=FRAME_BYTES, max_seconds=max_seconds)

    async def close_recording(self, recording_id: int, seconds: float | None = None) -> Any:
        """The book's close (a voicemail kept, or one discarded): the closed recording."""
        await self.recorder.row_written(recording_id, CLOSE_WAIT, keep=False)
        return await retry_db(
            DB_TRIES, self.recorder.book.close, recording_id, call_seconds=seconds
        )

    def caller_segments(self) -> list[Segment] | None:
        """What the caller's live speech has heard so far (None: no live speech)."""
        return self.speech.segments if self.speech is not None else None

    # -- PCI ------------------------------------------------------------------------------------

    async def pause(self, paused: bool, key: int | None) -> float | None:
        """Silence into every recording and recogniser of the call (or sound again), the gap
        marked on each recording; seconds into the first one, None if nothing is recording.
        `key`: the engine key whose pjsua2 recorder is paused."""
        gaps: list[tuple[int, float]] = []  # (recording, seconds into it)
        rec = self.recorder.open.get(key) if key is not None else None  # not yet finalised
        if rec is not None and key is not None and await self.engine.pause_recording(key, paused):
            gaps.append((rec.recording_id, time.monotonic() - rec.started))
        if self.speech is not None:
            self.speech.paused = paused
        bridge = self.bridge
        if bridge is not None:
            if bridge.speech is not None:
                bridge.speech.paused = paused
            if bridge.writer is not None and bridge.recording_id is not None:
                bridge.writer.paused = paused
                gaps.append((bridge.recording_id, time.monotonic() - bridge.started))
        for recording_id, at in gaps:
            await self.recorder.row_written(recording_id, FLUSH_WAIT)
            await retry_db(
                DB_TRIES, self.recorder.book.mark_pause, recording_id, round(at, 2), paused
            )
        return round(gaps[0][1], 2) if gaps else None
