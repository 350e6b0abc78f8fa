"""Calls' media in pjmedia's conference bridge: players, ears (taps), recordings, bridges.

Owner thread only, except `play` and `stop_playback` (any thread: they only queue on a player).

- A media port (player, tap) is never destroyed while the conference clock runs: a call's port
  rests for `PORT_GRACE` seconds after the call, then serves a later call. pjmedia 2.15 removes a
  conference port asynchronously: a port destroyed during a clock tick still gets that tick's
  put_frame, a Python upcall on the dying object (heap corruption; workers died of SIGSEGV under
  load).
- A recorder is pjmedia's own WAV writer (C, no Python per frame), one per call; it is closed
  `RECORDER_GRACE` seconds after its call, once the bridge has stopped feeding it.
- Two bridged calls each hear the other; the players stay connected to their own call only, so
  a prompt or tone reaches one party.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Container
from typing import Any

import pjsua2 as pj

from voice.audio import Sink
from voice.sip.events import describe
from voice.sip.player import PcmPlayer
from voice.sip.tap import FrameTap

log = logging.getLogger(__name__)

RECORDER_GRACE = 0.5  # seconds between unplugging a recorder and closing its file
PORT_GRACE = 5.0  # seconds before a call's media port serves another call

# Called on the media thread as a playback's first frame goes out.
Starter = Callable[[], None] | None


class Conference:
    def __init__(
        self,
        calls: Container[int],
        counters: dict[str, int],
        post: Callable[..., None],
    ) -> None:
        self._calls = calls  # the keys of the calls alive now (owned by the call set-up)
        self._counters = counters
        self._post = post
        self._players: dict[int, PcmPlayer] = {}
        self._graveyard: list[tuple[float, PcmPlayer]] = []
        self._spare_players: list[PcmPlayer] = []
        # Ears: what the far end of a call says, for live speech recognition.
        self._taps: dict[int, FrameTap] = {}
        self._tap_graveyard: list[tuple[float, FrameTap]] = []
        self._spare_taps: list[FrameTap] = []
        self._recorders: dict[int, pj.AudioMediaRecorder] = {}
        self._call_media: dict[int, pj.AudioMedia] = {}
        self._closing: list[tuple[float, int, pj.AudioMediaRecorder]] = []
        self._bridged: dict[int, int] = {}  # call key -> the key of the call it is bridged to

    # -- any thread ---------------------------------------------------------------------------

    def play(self, key: int, pcm: Any, on_done: Callable[[], None], on_start: Starter) -> bool:
        player = self._players.get(key)
        if player is None:
            return False
        player.play(pcm, on_done, on_start)
        return True

    def stop_playback(self, key: int) -> None:
        player = self._players.get(key)
        if player is not None:
            player.stop()

    # -- a call's life ------------------------------------------------------------------------

    def add_player(self, key: int) -> None:
        # Ports are reused, never destroyed while the clock runs (see the module's docstring).
        if self._spare_players:
            self._players[key] = self._spare_players.pop()
        else:
            self._players[key] = PcmPlayer(f"play{key}")

    def drop_player(self, key: int) -> None:
        """A call that never left (its INVITE failed): its player serves the next call."""
        self._spare_players.append(self._players.pop(key))

    def connect(self, key: int, media: pj.AudioMedia) -> None:
        """The call's audio is active (again, after a re-INVITE): plug everything into it."""
        self._call_media[key] = media
        player = self._players.get(key)
        if player is not None:
            player.startTransmit(media)
        recorder = self._recorders.get(key)
        if recorder is not None:
            media.startTransmit(recorder)
        tap = self._taps.get(key)
        if tap is not None:
            media.startTransmit(tap)
        peer = self._bridged.get(key)
        if peer is not None:  # new media (re-INVITE) of a bridged call: join it again
            self._join(key, peer)

    def call_ended(self, key: int) -> None:
        # The call's conference port leaves the bridge with all its connections: only forget.
        peer = self._bridged.pop(key, None)
        if peer is not None:
            self._bridged.pop(peer, None)
        self._call_media.pop(key, None)
        recorder = self._recorders.pop(key, None)
        if recorder is not None:
            player = self._players.get(key)
            if player is not None:
                player.stopTransmit(recorder)
            # Destroyed only once the bridge has stopped feeding it (see reap).
            self._closing.append((time.monotonic() + RECORDER_GRACE, key, recorder))
        player = self._players.pop(key, None)
        if player is not None:
            player.listener = None
            player.stop()
            self._graveyard.append((time.monotonic() + PORT_GRACE, player))
        tap = self._taps.pop(key, None)
        if tap is not None:
            tap.sinks = ()
            self._tap_graveyard.append((time.monotonic() + PORT_GRACE, tap))

    def reap(self, now: float) -> None:
        while self._graveyard and self._graveyard[0][0] <= now:
            self._spare_players.append(self._graveyard.pop(0)[1])
        while self._tap_graveyard and self._tap_graveyard[0][0] <= now:
            self._spare_taps.append(self._tap_graveyard.pop(0)[1])
        while self._closing and self._closing[0][0] <= now:
            _, key, recorder = self._closing.pop(0)
            del recorder  # pjsua_recorder_destroy: the WAV header is written, the file closed
            self._post("recording_closed", key)

    def release(self) -> None:
        """Forget every port (shutdown, once the conference clock is stopped)."""
        self._players.clear()
        self._graveyard.clear()
        self._spare_players.clear()
        self._taps.clear()
        self._tap_graveyard.clear()
        self._spare_taps.clear()
        self._call_media.clear()
        self._recorders.clear()
        self._closing.clear()

    # -- recording and listening --------------------------------------------------------------

    def start_recording(self, key: int, path: str) -> bool:
        if key not in self._calls or key in self._recorders:
            return False
        recorder = pj.AudioMediaRecorder()
        recorder.createRecorder(path)
        self._recorders[key] = recorder
        player = self._players.get(key)
        if player is not None:
            player.startTransmit(recorder)  # what the caller hears from us
        media = self._call_media.get(key)
        if media is not None:
            media.startTransmit(recorder)  # what the caller says
        self._counters["recordings_started"] += 1
        return True

    def pause_recording(self, key: int, paused: bool) -> bool:
        recorder = self._recorders.get(key)
        if recorder is None:
            return False
        # Level 0 writes silence: the file keeps the call's timeline, the gap holds nothing.
        recorder.adjustRxLevel(0.0 if paused else 1.0)
        return True

    def listen(self, key: int, heard: Sink | None, said: Sink | None) -> bool:
        if key not in self._calls:
            return False
        player = self._players.get(key)
        if player is not None:
            player.listener = said
        if heard is not None:
            self.add_sink(key, heard)
        return True

    def add_sink(self, key: int, sink: Sink) -> bool:
        if key not in self._calls:
            return False
        tap = self._taps.get(key)
        if tap is None:
            tap = self._spare_taps.pop() if self._spare_taps else FrameTap(f"tap{key}")
            tap.sinks = ()
            self._taps[key] = tap
            media = self._call_media.get(key)
            if media is not None:
                media.startTransmit(tap)
        tap.sinks = (*tap.sinks, sink)
        return True

    def remove_sink(self, key: int, sink: Sink) -> None:
        tap = self._taps.get(key)
        if tap is not None:
            tap.sinks = tuple(s for s in tap.sinks if s is not sink)

    # -- bridges ------------------------------------------------------------------------------

    def bridge(self, a: int, b: int) -> bool:
        if a == b or a not in self._calls or b not in self._calls:
            return False
        self.unbridge(a)
        self.unbridge(b)
        self._bridged[a], self._bridged[b] = b, a
        self._join(a, b)
        self._counters["bridges"] += 1
        return True

    def _join(self, a: int, b: int) -> None:
        media_a, media_b = self._call_media.get(a), self._call_media.get(b)
        if media_a is None or media_b is None:
            return  # joined by connect() once both have media
        media_a.startTransmit(media_b)
        media_b.startTransmit(media_a)
        # Each call's own recording (mono, mixed) hears the other party too.
        for media, key in ((media_b, a), (media_a, b)):
            recorder = self._recorders.get(key)
            if recorder is not None:
                media.startTransmit(recorder)

    def unbridge(self, a: int) -> None:
        b = self._bridged.pop(a, None)
        if b is None:
            return
        self._bridged.pop(b, None)
        media_a, media_b = self._call_media.get(a), self._call_media.get(b)
        if media_a is None or media_b is None:
            return  # a call that ended left the bridge with its conference port
        for source, sink in ((media_a, media_b), (media_b, media_a)):
            try:
                source.stopTransmit(sink)
            except pj.Error as exc:
                log.debug("unbridge %d/%d: %s", a, b, describe(exc))
        for media, key in ((media_b, a), (media_a, b)):
            recorder = self._recorders.get(key)
            if recorder is not None:
                with contextlib.suppress(pj.Error):
                    media.stopTransmit(recorder)
