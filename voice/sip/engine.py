"""The pjsua2 Endpoint, owned by one thread and bridged to asyncio: `SipEngine`, the one door
the rest of the code uses to voice/sip.

Every pjsua2 call happens on the owner thread: asyncio code submits callables with `run()`, and
pjsua2 callbacks hand events to the loop with `call_soon_threadsafe`. The traps measured in
../shared/DESIGN.md are handled in this package and only here, each where its objects live:

- owner.py: the one thread, its command queue, events to the loop;
- callbacks.py: pjsua2's callbacks catch and log everything;
- callsetup.py: admission (486 above `max_calls`, 503 above `max_setups_per_second`, before
  the ioqueue runs out of sockets), and the Python reference to a `Call` dropped in
  `onCallState(DISCONNECTED)`;
- conference.py: media ports (player, tap) never destroyed while the conference clock runs,
  recordings, bridges (each call's media to the other; players reach their own call only);
- endpoint.py: null sound device and `sndAutoCloseTime = -1`; at shutdown the clock is stopped
  (`setNoDev`) before the ports are released, and every Call, Account and port is released and
  `gc.collect()` runs before `libDestroy()`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pjsua2 as pj

from voice import telemetry
from voice.audio import Sink
from voice.config import SipConfig
from voice.sip import endpoint
from voice.sip.callbacks import EngineAccount
from voice.sip.callsetup import CallSetup
from voice.sip.events import CallIdentity, CallRefused, Events, describe
from voice.sip.owner import EventPost, OwnerThread

__all__ = ["CallIdentity", "CallRefused", "Events", "SipEngine", "describe"]

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_TIME_MS = 20  # owner thread: longest wait in libHandleEvents before serving submitted
# work. SIP events wake it at once; a shorter wait only burns CPU in idle workers.


class SipEngine:
    def __init__(
        self,
        cfg: SipConfig,
        loop: asyncio.AbstractEventLoop,
        events: Events,
        *,
        media_bind: str | None = None,
        proxy: str | None = None,
    ) -> None:
        self._cfg = cfg
        self._media_bind = cfg.bind if media_bind is None else media_bind
        self._proxy = proxy
        self._owner = OwnerThread(self._init, self._step, self._shutdown)
        self._ep: pj.Endpoint | None = None
        self.counters: collections.Counter[str] = telemetry.Counts()
        self._setup = CallSetup(cfg, proxy, EventPost(loop, events), self.counters)
        self._media = self._setup.conference

    @property
    def draining(self) -> bool:
        """Set: every new call, incoming or placed, is refused with 503."""
        return self._setup.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._setup.draining = value

    # -- asyncio side -------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        self._owner.start(timeout)

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        return self._owner.submit(fn)

    async def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the owner thread and await its result."""
        return await self._owner.run(fn)

    def stop(self, timeout: float = 10.0) -> None:
        self._owner.stop(timeout)

    def play(
        self,
        key: int,
        pcm: Any,
        on_done: Callable[[], None],
        on_start: Callable[[], None] | None = None,
    ) -> bool:
        """Queue audio on a call's player; False if the call is gone. Safe from any thread.
        `on_start` is called on the media thread as its first frame goes out."""
        return self._media.play(key, pcm, on_done, on_start)

    def stop_playback(self, key: int) -> None:
        self._media.stop_playback(key)

    async def hangup(self, key: int, code: int = 200) -> None:
        await self.run(lambda: self._setup.hangup(key, code))

    async def start_recording(self, key: int, path: str) -> bool:
        """Record the call (both directions, mixed) into the WAV file `path` as it happens.

        The file grows in 4 KB steps while the call runs; after the call ends the engine closes
        it and reports `recording_closed(key)`. False if the call is already gone.
        """
        return await self.run(lambda: self._media.start_recording(key, path))

    async def pause_recording(self, key: int, paused: bool) -> bool:
        """PCI pause: silence goes to the file while paused; False if not recording."""
        return await self.run(lambda: self._media.pause_recording(key, paused))

    async def listen(self, key: int, heard: Sink | None, said: Sink | None) -> bool:
        """Hand the call's audio to sinks as it flows, 20 ms frames on the media thread.

        `heard` gets what the far end sends, `said` what our player sends them; sinks must only
        queue. False if the call is already gone.
        """
        return await self.run(lambda: self._media.listen(key, heard, said))

    async def dial(
        self,
        uri: str,
        *,
        from_uri: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        purpose: str = "ivr",
    ) -> CallIdentity:
        """Place a call to `uri`; events then arrive as for an answered incoming call.

        `from_uri` replaces the From (the caller ID presented), `headers` are added to the
        INVITE. Raises `CallRefused` when this worker is draining, full or over its set-up rate.
        """
        return await self.run(lambda: self._setup.dial(uri, from_uri, headers, purpose))

    async def answer(
        self, key: int, code: int, reason: str = "", headers: tuple[tuple[str, str], ...] = ()
    ) -> bool:
        """Answer a call left ringing (a softphone's): 200 takes it, 4xx-6xx refuses it.
        False if the call is gone."""
        return await self.run(lambda: self._setup.answer(key, code, reason, headers))

    async def bridge(self, a: int, b: int) -> bool:
        """Join two calls: each hears the other; each call's player still reaches it alone.
        False if either call is gone. Undone by either call's end (or `unbridge`)."""
        return await self.run(lambda: self._media.bridge(a, b))

    async def unbridge(self, a: int) -> None:
        await self.run(lambda: self._media.unbridge(a))

    async def add_sink(self, key: int, sink: Sink) -> bool:
        """Also hand what the far end of call `key` sends to `sink` (20 ms frames, media thread;
        it must only queue). False if the call is gone."""
        return await self.run(lambda: self._media.add_sink(key, sink))

    async def remove_sink(self, key: int, sink: Sink) -> None:
        await self.run(lambda: self._media.remove_sink(key, sink))

    # -- owner thread -------------------------------------------------------------------------

    def _init(self) -> None:
        ep = pj.Endpoint()
        ep.libCreate()
        self._ep = ep  # from here on, _shutdown destroys it even if the rest fails
        endpoint.start(ep, self._cfg)
        account = EngineAccount(self._setup)
        account.create(endpoint.account_config(self._cfg, self._media_bind, self._proxy), True)
        self._setup.account = account

    def _step(self) -> None:
        assert self._ep is not None
        self._ep.libHandleEvents(POLL_TIME_MS)
        self._owner.serve_commands()
        self._media.reap(time.monotonic())

    def _shutdown(self) -> None:
        ep = self._ep
        if ep is None:
            return
        try:
            endpoint.close(ep, self._setup.calls, self._release)
        except Exception:
            log.exception("SIP engine shutdown failed")
        finally:
            self._ep = None
            self._owner.cancel_pending()

    def _release(self) -> None:
        self._media.release()
        self._setup.account = None
