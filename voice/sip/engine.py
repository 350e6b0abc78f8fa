"""The pjsua2 Endpoint, owned by one thread and bridged to asyncio.

Every pjsua2 call happens on the owner thread: asyncio code submits callables with `run()`, and
pjsua2 callbacks hand events to the loop with `call_soon_threadsafe`. The traps measured in
../shared/DESIGN.md are handled here and only here:

- null sound device, and `sndAutoCloseTime = -1` so conference slots of ended calls are freed;
- the Python reference to a `Call` is dropped in `onCallState(DISCONNECTED)`;
- a media port (player, tap) is never destroyed while the conference clock runs: a call's port
  rests for `PORT_GRACE` seconds after the call, then serves a later call; at shutdown the clock
  is stopped (`setNoDev`) before the ports are released;
- callbacks catch and log everything;
- calls above `max_calls` get 486 and bursts above `max_setups_per_second` get 503 before the
  ioqueue runs out of sockets;
- two calls are bridged in the conference bridge (each call's media to the other); the players
  stay connected to their own call only, so a prompt or tone reaches one party;
- before `libDestroy()` every Call, Account and port is released and `gc.collect()` runs.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import gc
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pjsua2 as pj

from voice import telemetry
from voice.config import SipConfig
from voice.sip.player import PcmPlayer
from voice.sip.tap import FrameTap, Sink
from voice.sip.uri import request_user, softphone_of

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_TIME_MS = 20  # owner thread: longest wait in libHandleEvents before serving submitted
# work. SIP events wake it at once; a shorter wait only burns CPU in idle workers.
RECORDER_GRACE = 0.5  # seconds between unplugging a recorder and closing its file
PORT_GRACE = 5.0  # seconds before a call's media port serves another call
SHUTDOWN_GRACE = 3.0  # seconds to let BYEs go out before libDestroy


@dataclass(frozen=True)
class CallIdentity:
    # pjsua reuses call slot ids at once; `key` is unique for the life of the process, so a
    # flow that outlives its call can never reach the call that took its slot.
    key: int
    sip_call_id: str
    remote_uri: str
    local_uri: str
    outbound: bool = False
    # A softphone's call relayed by Kamailio (`X-Voice-Softphone`): answered by the worker once
    # it has checked the call (`answer`), not at once. `dialled`: the Request-URI's user.
    softphone: str | None = None
    dialled: str | None = None
    # "ivr": the call runs the IVR; "leg": a call placed to join another (a collector, the
    # customer of a click-to-call), driven by whoever placed it.
    purpose: str = "ivr"


class CallRefused(Exception):
    """This worker will not place the call now (draining, full, bursting or a bad URI)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class Events:
    """What the engine tells the asyncio side; every method runs on the event loop."""

    def incoming(self, identity: CallIdentity) -> None: ...
    def outgoing(self, identity: CallIdentity) -> None: ...
    def confirmed(self, key: int) -> None: ...
    def digit(self, key: int, digit: str) -> None: ...
    def disconnected(self, key: int, code: int, reason: str) -> None: ...
    def refused(self, identity: CallIdentity, code: int, reason: str) -> None: ...
    def recording_closed(self, key: int) -> None: ...


def describe(exc: BaseException) -> str:
    """pjsua2 errors carry their text in `.info()`, not in `str()`."""
    if isinstance(exc, pj.Error):
        return f"{exc.title}: {exc.reason} (status {exc.status})"
    return str(exc) or type(exc).__name__


class _Account(pj.Account):
    def __init__(self, engine: SipEngine) -> None:
        super().__init__()
        self._engine = engine

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        try:
            self._engine._incoming(self, prm)
        except Exception:
            log.exception("onIncomingCall failed")


class _Call(pj.Call):
    def __init__(self, engine: SipEngine, account: pj.Account, call_id: int, key: int) -> None:
        super().__init__(account, call_id)
        self._engine = engine
        self.key = key
        # Events of a call we place are held until `outgoing` has told the loop about it.
        self.announced = call_id != pj.PJSUA_INVALID_ID
        self.inbound = self.announced  # an incoming call has its pjsua id at once
        self.invited = time.monotonic()  # its INVITE arrived, or ours is about to leave
        self.early: list[tuple[str, tuple[Any, ...]]] = []

    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802
        try:
            info = self.getInfo()
            if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
                if not self.inbound:
                    telemetry.answered("outbound", self.invited)
                self._engine._post_call(self, "confirmed", self.key)
            elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self._engine._gone(self, info.lastStatusCode, info.lastReason)
        except Exception:
            log.exception("onCallState failed")

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        try:
            info = self.getInfo()
            for media in info.media:
                if (
                    media.type == pj.PJMEDIA_TYPE_AUDIO
                    and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE
                ):
                    self._engine._connect_media(self, self.getAudioMedia(media.index))
        except Exception:
            log.exception("onCallMediaState failed")

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:  # noqa: N802
        # onDtmfEvent fires for the same key too; digits are counted here only (RFC 2833 and INFO).
        try:
            self._engine._post_call(self, "digit", self.key, str(prm.digit))
        except Exception:
            log.exception("onDtmfDigit failed")


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
        self._loop = loop
        self._events = events
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future]] = (
            queue.SimpleQueue()
        )
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="pjsua2-owner", daemon=True)
        self._ep: pj.Endpoint | None = None
        self._account: _Account | None = None
        self._calls: dict[int, _Call] = {}
        self._players: dict[int, PcmPlayer] = {}
        self._graveyard: list[tuple[float, PcmPlayer]] = []
        self._spare_players: list[PcmPlayer] = []
        # Ears: what the far end of a call says, for live speech recognition.
        self._taps: dict[int, FrameTap] = {}
        self._tap_graveyard: list[tuple[float, FrameTap]] = []
        self._spare_taps: list[FrameTap] = []
        # Recordings are pjmedia's own WAV writer (C, no Python per frame), one per call.
        self._recorders: dict[int, pj.AudioMediaRecorder] = {}
        self._call_media: dict[int, pj.AudioMedia] = {}
        self._closing: list[tuple[float, int, pj.AudioMediaRecorder]] = []
        self._bridged: dict[int, int] = {}  # call key -> the key of the call it is bridged to
        # Kamailio's address: only an INVITE from there may carry a trusted X-Voice-Softphone.
        self._proxy_source = _host_port(proxy) if proxy else None
        self._recent_setups: collections.deque[float] = collections.deque()
        self._keys = itertools.count(1)
        self.draining = False
        self.counters: collections.Counter[str] = telemetry.Counts()

    # -- asyncio side -------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("SIP engine did not start in time")
        if self._startup_error is not None:
            raise RuntimeError(f"SIP engine failed to start: {describe(self._startup_error)}")

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._stopping.is_set():
            future.set_exception(RuntimeError("SIP engine is stopping"))
        else:
            self._commands.put((fn, future))
        return future

    async def run(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the owner thread and await its result."""
        return await asyncio.wrap_future(self.submit(fn))

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def play(
        self,
        key: int,
        pcm: Any,
        on_done: Callable[[], None],
        on_start: Callable[[], None] | None = None,
    ) -> bool:
        """Queue audio on a call's player; False if the call is gone. Safe from any thread.
        `on_start` is called on the media thread as its first frame goes out."""
        player = self._players.get(key)
        if player is None:
            return False
        player.play(pcm, on_done, on_start)
        return True

    def stop_playback(self, key: int) -> None:
        player = self._players.get(key)
        if player is not None:
            player.stop()

    async def hangup(self, key: int, code: int = 200) -> None:
        def _hangup() -> None:
            call = self._calls.get(key)
            if call is not None:
                prm = pj.CallOpParam()
                prm.statusCode = code
                call.hangup(prm)

        await self.run(_hangup)

    async def start_recording(self, key: int, path: str) -> bool:
        """Record the call (both directions, mixed) into the WAV file `path` as it happens.

        The file grows in 4 KB steps while the call runs; after the call ends the engine closes
        it and reports `recording_closed(key)`. False if the call is already gone.
        """
        return await self.run(lambda: self._start_recording(key, path))

    async def pause_recording(self, key: int, paused: bool) -> bool:
        """PCI pause: silence goes to the file while paused; False if not recording."""
        return await self.run(lambda: self._pause_recording(key, paused))

    async def listen(self, key: int, heard: Sink | None, said: Sink | None) -> bool:
        """Hand the call's audio to sinks as it flows, 20 ms frames on the media thread.

        `heard` gets what the far end sends, `said` what our player sends them; sinks must only
        queue. False if the call is already gone.
        """
        return await self.run(lambda: self._listen(key, heard, said))

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
        return await self.run(lambda: self._dial(uri, from_uri, headers, purpose))

    async def answer(
        self, key: int, code: int, reason: str = "", headers: tuple[tuple[str, str], ...] = ()
    ) -> bool:
        """Answer a call left ringing (a softphone's): 200 takes it, 4xx-6xx refuses it.
        False if the call is gone."""
        return await self.run(lambda: self._answer(key, code, reason, headers))

    async def bridge(self, a: int, b: int) -> bool:
        """Join two calls: each hears the other; each call's player still reaches it alone.
        False if either call is gone. Undone by either call's end (or `unbridge`)."""
        return await self.run(lambda: self._bridge(a, b))

    async def unbridge(self, a: int) -> None:
        await self.run(lambda: self._unbridge(a))

    async def add_sink(self, key: int, sink: Sink) -> bool:
        """Also hand what the far end of call `key` sends to `sink` (20 ms frames, media thread;
        it must only queue). False if the call is gone."""
        return await self.run(lambda: self._add_sink(key, sink))

    async def remove_sink(self, key: int, sink: Sink) -> None:
        await self.run(lambda: self._remove_sink(key, sink))

    # -- owner thread -------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._init()
        except BaseException as exc:  # reported to start(); the thread then ends
            self._startup_error = exc
            self._shutdown()  # pjlib objects must die on this thread, or exit aborts
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stopping.is_set():
                self._ep.libHandleEvents(POLL_TIME_MS)
                self._serve_commands()
                self._reap_ports(time.monotonic())
        except BaseException:
            log.exception("SIP owner loop crashed")
        finally:
            self._shutdown()

    def _init(self) -> None:
        cfg = self._cfg
        ep = pj.Endpoint()
        ep.libCreate()
        self._ep = ep
        ep_cfg = pj.EpConfig()
        ep_cfg.uaConfig.maxCalls = cfg.max_calls
        ep_cfg.uaConfig.threadCnt = 0  # SIP events are handled by this thread in libHandleEvents
        ep_cfg.uaConfig.mainThreadOnly = False
        ep_cfg.uaConfig.userAgent = cfg.user_agent
        ep_cfg.medConfig.sndAutoCloseTime = -1  # else conference slots leak (488 after ~270 calls)
        ep_cfg.medConfig.clockRate = 16000
        ep_cfg.medConfig.sndClockRate = 16000
        ep_cfg.medConfig.noVad = True  # keep sending frames in pauses: the far end records them
        ep_cfg.logConfig.level = cfg.log_level
        ep_cfg.logConfig.consoleLevel = cfg.log_level
        ep.libInit(ep_cfg)
        ep.audDevManager().setNullDev()  # the wheel has no sound devices; media needs a clock
        for enabled, kind in ((cfg.udp, pj.PJSIP_TRANSPORT_UDP), (cfg.tcp, pj.PJSIP_TRANSPORT_TCP)):
            if enabled:
                tcfg = pj.TransportConfig()
                tcfg.port = cfg.port
                tcfg.boundAddress = cfg.bind
                ep.transportCreate(kind, tcfg)
        ep.libStart()
        self._set_codec_priorities(ep)
        acfg = pj.AccountConfig()
        host = cfg.bind if cfg.bind != "0.0.0.0" else "127.0.0.1"
        acfg.idUri = f"sip:voice@{host}:{cfg.port}"
        acfg.mediaConfig.transportConfig.port = cfg.rtp_port
        acfg.mediaConfig.transportConfig.portRange = cfg.rtp_port_range
        if self._media_bind not in ("0.0.0.0", ""):
            acfg.mediaConfig.transportConfig.boundAddress = self._media_bind
        if self._proxy:
            # Calls this worker places go through Kamailio, the only way out to a trunk.
            acfg.sipConfig.proxies.append(self._proxy)
        account = _Account(self)
        account.create(acfg, True)
        self._account = account

    def _set_codec_priorities(self, ep: pj.Endpoint) -> None:
        # Two pjsua2 peers settle on lossy speex unless told otherwise: rank the configured codecs
        # first (G722 for ASR quality, then G.711) and disable the rest.
        wanted = [c.lower() for c in self._cfg.codecs]
        for info in ep.codecEnum2():
            codec_id = info.codecId
            base = codec_id.rsplit("/", 1)[0].lower() if codec_id.count("/") == 2 else codec_id
            rank = wanted.index(base) if base in wanted else None
            ep.codecSetPriority(codec_id, 0 if rank is None else 250 - rank)

    def _serve_commands(self) -> None:
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def _post(self, method: str, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(getattr(self._events, method), *args)
        except RuntimeError:  # loop closed during shutdown
            log.debug("dropped %s event: loop closed", method)

    def _post_call(self, call: _Call, method: str, *args: Any) -> None:
        if call.announced:
            self._post(method, *args)
        else:
            call.early.append((method, args))

    def _admit(self, now: float) -> tuple[int, str] | None:
        while self._recent_setups and now - self._recent_setups[0] > 1.0:
            self._recent_setups.popleft()
        if self.draining:
            return 503, "Service Unavailable"
        if len(self._calls) >= self._cfg.max_calls:
            return 486, "Busy Here"
        if len(self._recent_setups) >= self._cfg.max_setups_per_second:
            return 503, "Service Unavailable"
        self._recent_setups.append(now)
        return None

    def _incoming(self, account: pj.Account, iprm: pj.OnIncomingCallParam) -> None:
        key = next(self._keys)
        call = _Call(self, account, iprm.callId, key)
        info = call.getInfo()
        softphone = dialled = None
        if self._proxy_source is not None and iprm.rdata.srcAddress == self._proxy_source:
            # Kamailio removes any X-Voice-* header a client sent and names the authenticated
            # softphone itself; from anywhere else the header is ignored.
            message = iprm.rdata.wholeMsg
            softphone = softphone_of(message)
            dialled = request_user(message) if softphone else None
        identity = CallIdentity(
            key,
            info.callIdString,
            info.remoteUri,
            info.localUri,
            softphone=softphone,
            dialled=dialled,
        )
        refusal = self._admit(time.monotonic())
        prm = pj.CallOpParam()
        if refusal is not None:
            self._refuse(call, identity, prm, *refusal)
            return
        self._calls[key] = call
        self._players[key] = self._player(key)
        self._post("incoming", identity)
        if softphone is not None:
            # Ringing until the worker has checked the call (guardrails) and dialled out.
            prm.statusCode = 180
            call.answer(prm)
            return
        self.counters["calls_answered"] += 1
        prm.statusCode = 200
        call.answer(prm)
        telemetry.answered("inbound", call.invited)

    def _answer(
        self, key: int, code: int, reason: str, headers: tuple[tuple[str, str], ...]
    ) -> bool:
        call = self._calls.get(key)
        if call is None:
            return False
        prm = pj.CallOpParam()
        prm.statusCode = code
        if reason:
            prm.reason = reason
        for name, value in headers:
            header = pj.SipHeader()
            header.hName, header.hValue = name, value
            prm.txOption.headers.append(header)
        if code < 300:
            self.counters["calls_answered"] += 1
        else:
            self.counters[f"calls_refused_{code}"] += 1
        call.answer(prm)
        if code < 300:
            telemetry.answered("inbound", call.invited)
        return True

    def _dial(
        self,
        uri: str,
        from_uri: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        purpose: str = "ivr",
    ) -> CallIdentity:
        assert self._account is not None
        refusal = self._admit(time.monotonic())
        if refusal is not None:
            raise CallRefused(*refusal)
        key = next(self._keys)
        call = _Call(self, self._account, pj.PJSUA_INVALID_ID, key)
        self._calls[key] = call
        self._players[key] = self._player(key)
        prm = pj.CallOpParam(True)
        if from_uri:
            prm.txOption.localUri = from_uri
        for name, value in headers:
            header = pj.SipHeader()
            header.hName, header.hValue = name, value
            prm.txOption.headers.append(header)
        try:
            call.makeCall(uri, prm)
        except pj.Error as exc:
            self._calls.pop(key, None)
            self._spare_players.append(self._players.pop(key))
            raise CallRefused(400, describe(exc)) from None
        info = call.getInfo()
        self.counters["calls_placed"] += 1
        identity = CallIdentity(
            key, info.callIdString, info.remoteUri, info.localUri, True, purpose=purpose
        )
        self._post("outgoing", identity)
        call.announced = True
        for method, args in call.early:
            self._post(method, *args)
        call.early.clear()
        return identity

    def _refuse(
        self, call: _Call, identity: CallIdentity, prm: pj.CallOpParam, code: int, reason: str
    ) -> None:
        self.counters[f"calls_refused_{code}"] += 1
        prm.statusCode = code
        prm.reason = reason
        if code == 503:
            header = pj.SipHeader()
            header.hName, header.hValue = "Retry-After", "1"
            prm.txOption.headers.append(header)
        # Keep the reference until DISCONNECTED arrives (it may arrive inside answer()).
        self._calls[identity.key] = call
        self._post("refused", identity, code, reason)
        call.answer(prm)

    def _player(self, key: int) -> PcmPlayer:
        # pjmedia 2.15 removes a conference port asynchronously: a port destroyed during a clock
        # tick still gets that tick's put_frame, a Python upcall on the dying object (heap
        # corruption; workers died of SIGSEGV under load). So ports are reused, never destroyed
        # while the clock runs.
        if self._spare_players:
            return self._spare_players.pop()
        return PcmPlayer(f"play{key}")

    def _connect_media(self, call: _Call, media: pj.AudioMedia) -> None:
        self._call_media[call.key] = media
        player = self._players.get(call.key)
        if player is not None:
            player.startTransmit(media)
        recorder = self._recorders.get(call.key)
        if recorder is not None:
            media.startTransmit(recorder)
        tap = self._taps.get(call.key)
        if tap is not None:
            media.startTransmit(tap)
        peer = self._bridged.get(call.key)
        if peer is not None:  # new media (re-INVITE) of a bridged call: join it again
            self._join(call.key, peer)

    def _gone(self, call: _Call, code: int, reason: str) -> None:
        self._calls.pop(call.key, None)
        # The call's conference port leaves the bridge with all its connections: only forget.
        peer = self._bridged.pop(call.key, None)
        if peer is not None:
            self._bridged.pop(peer, None)
        self._call_media.pop(call.key, None)
        recorder = self._recorders.pop(call.key, None)
        if recorder is not None:
            player = self._players.get(call.key)
            if player is not None:
                player.stopTransmit(recorder)
            # Destroyed only once the bridge has stopped feeding it (see _reap_ports).
            self._closing.append((time.monotonic() + RECORDER_GRACE, call.key, recorder))
        player = self._players.pop(call.key, None)
        if player is not None:
            player.listener = None
            player.stop()
            self._graveyard.append((time.monotonic() + PORT_GRACE, player))
        tap = self._taps.pop(call.key, None)
        if tap is not None:
            tap.sinks = ()
            self._tap_graveyard.append((time.monotonic() + PORT_GRACE, tap))
        self._post_call(call, "disconnected", call.key, code, reason)

    def _reap_ports(self, now: float) -> None:
        while self._graveyard and self._graveyard[0][0] <= now:
            self._spare_players.append(self._graveyard.pop(0)[1])
        while self._tap_graveyard and self._tap_graveyard[0][0] <= now:
            self._spare_taps.append(self._tap_graveyard.pop(0)[1])
        while self._closing and self._closing[0][0] <= now:
            _, key, recorder = self._closing.pop(0)
            del recorder  # pjsua_recorder_destroy: the WAV header is written, the file closed
            self._post("recording_closed", key)

    def _start_recording(self, key: int, path: str) -> bool:
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
        self.counters["recordings_started"] += 1
        return True

    def _listen(self, key: int, heard: Sink | None, said: Sink | None) -> bool:
        if key not in self._calls:
            return False
        player = self._players.get(key)
        if player is not None:
            player.listener = said
        if heard is not None:
            self._add_sink(key, heard)
        return True

    def _add_sink(self, key: int, sink: Sink) -> bool:
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

    def _remove_sink(self, key: int, sink: Sink) -> None:
        tap = self._taps.get(key)
        if tap is not None:
            tap.sinks = tuple(s for s in tap.sinks if s is not sink)

    def _bridge(self, a: int, b: int) -> bool:
        if a == b or a not in self._calls or b not in self._calls:
            return False
        self._unbridge(a)
        self._unbridge(b)
        self._bridged[a], self._bridged[b] = b, a
        self._join(a, b)
        self.counters["bridges"] += 1
        return True

    def _join(self, a: int, b: int) -> None:
        media_a, media_b = self._call_media.get(a), self._call_media.get(b)
        if media_a is None or media_b is None:
            return  # joined by _connect_media once both have media
        media_a.startTransmit(media_b)
        media_b.startTransmit(media_a)
        # Each call's own recording (mono, mixed) hears the other party too.
        for media, key in ((media_b, a), (media_a, b)):
            recorder = self._recorders.get(key)
            if recorder is not None:
                media.startTransmit(recorder)

    def _unbridge(self, a: int) -> None:
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

    def _pause_recording(self, key: int, paused: bool) -> bool:
        recorder = self._recorders.get(key)
        if recorder is None:
            return False
        # Level 0 writes silence: the file keeps the call's timeline, the gap holds nothing.
        recorder.adjustRxLevel(0.0 if paused else 1.0)
        return True

    def _shutdown(self) -> None:
        ep = self._ep
        if ep is None:
            return
        try:
            for call in list(self._calls.values()):
                try:
                    call.hangup(pj.CallOpParam())
                except Exception:
                    log.exception("hangup at shutdown failed")
            deadline = time.monotonic() + SHUTDOWN_GRACE
            while self._calls and time.monotonic() < deadline:
                ep.libHandleEvents(20)
            self._calls.clear()
            try:
                ep.audDevManager().setNoDev()  # stop the conference clock before ports die
            except pj.Error as exc:  # start-up failed before the media subsystem existed
                log.debug("setNoDev at shutdown: %s", describe(exc))
            self._players.clear()
            self._graveyard.clear()
            self._spare_players.clear()
            self._taps.clear()
            self._tap_graveyard.clear()
            self._spare_taps.clear()
            self._call_media.clear()
            self._recorders.clear()
            self._closing.clear()
            self._account = None
            gc.collect()
            ep.libDestroy()
        except Exception:
            log.exception("SIP engine shutdown failed")
        finally:
            self._ep = None
            while True:
                try:
                    _, future = self._commands.get_nowait()
                except queue.Empty:
                    break
                future.cancel()


def _host_port(proxy: str) -> str | None:
    """`sip:127.0.0.1:5060;lr` -> `127.0.0.1:5060` (how pjsua2 reports a source address)."""
    rest = proxy.split(":", 1)[1] if proxy.lower().startswith("sip:") else proxy
    hostport = rest.split(";", 1)[0]
    return hostport if ":" in hostport else f"{hostport}:5060"
