"""A call worker: one pjsua2 Endpoint (at most 4 calls) running a script for each call it has.

Run by the supervisor (`voice serve`) as its own process, so a crash takes only its own calls.
Database work runs in threads (`asyncio.to_thread`); pjsua2 work runs on the engine's owner thread.
The worker serves and drains, turns engine events into calls' events, answers its control
socket, and keeps a table of `CallSession`s (voice/calls/session.py); what a call does is its
script's: the IVR (voice/calls/ivr.py), click-to-call or a softphone's call
(voice/calls/collector.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import signal
from collections.abc import Coroutine
from typing import Any

from accounts.call_journal import CallJournal
from accounts.db import make_engine, make_sessions
from accounts.idblocks import IdBlocks
from accounts.retry import DB_ERRORS, DB_TRIES, retry_db
from accounts.transcription import live_marker
from accounts.write_behind import WriteBehind
from recordings.book import RecordingBook
from voice import telemetry
from voice.asr.memory import limit_arenas
from voice.asr.model import load_model
from voice.calls import outbound
from voice.calls.call import ANSWER_TIMEOUT, SipCall
from voice.calls.ivr import IvrCalls
from voice.calls.kit import CallKit
from voice.calls.media import Recorder
from voice.calls.placed import PlacedCalls
from voice.calls.session import CallSession, CallTable
from voice.config import Config
from voice.control import ControlServer
from voice.fleet import WorkerSpec
from voice.ivr.clips import ClipLibrary
from voice.sip.engine import CallIdentity, Events, SipEngine

log = logging.getLogger(__name__)

RING_TIMEOUT = 45.0  # seconds a call we place may ring before it counts as unanswered
WRITES_FLUSH_S = 10.0  # at the end: time for the calls' last writes before they are spooled
# A softphone user (Kamailio's registrar) or a phone number (Kamailio's gateway); nothing else
# may reach a SIP URI we build.
DIALABLE = re.compile(r"\+?[0-9]{3,15}|[a-z0-9._-]{1,64}")
# A URI a leg may be placed to (a collector's configured sip_uri, or one built above).
LEG_URI = re.compile(r"sips?:[A-Za-z0-9+._~*#()-]{1,64}@[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?")


class Worker(Events):
    def __init__(self, cfg: Config, spec: WorkerSpec, model: Any = None) -> None:
        self.cfg, self.spec, self.name = cfg, spec, spec.name
        # The Vosk model, loaded once by the zygote and shared copy-on-write; None: keypad only.
        self.model = model if (cfg.asr.transcripts or cfg.asr.spoken_menu) else None
        self.phrases = cfg.asr.phrase_set() if model is not None else None
        sessions = make_sessions(make_engine(cfg.database_url, cfg.database.busy_timeout_ms))
        self.sessions = sessions
        self._new_legs: dict[int, SipCall] = {}  # legs placed, until `place_leg` takes them
        self.journal = CallJournal(sessions)
        self.clips = ClipLibrary(
            cfg.tts, cfg.data_dir / "cache" / "tts", cfg.prompts_dir, cfg.ivr.company_name
        )
        self.calls: dict[int, SipCall] = {}  # every SIP call, legs included, by engine key
        self.table = CallTable()
        self.engine: SipEngine | None = None
        self.metrics: collections.Counter[str] = telemetry.Counts()  # also on /metrics
        self._watchers: set[asyncio.Task[None]] = set()
        self.book = RecordingBook(sessions, cfg)
        # What this worker's calls owe the database; a worker of this name killed before it
        # was written left it in this spool, written first (accounts/write_behind.py).
        self.writes = WriteBehind(sessions, cfg.data_dir / "run" / "spool" / f"{self.name}.jsonl",
                                  on_replayed=self._close_replayed)  # fmt: skip
        self.ids = IdBlocks(sessions)  # a call's first rows go behind it too
        self.kit: CallKit | None = None  # once the engine runs
        self.ivr: IvrCalls | None = None
        self.placed: PlacedCalls | None = None
        self.control = ControlServer(
            spec.control_path,
            {
                "health": self.health,
                "hangup": self.hangup,
                "dial": self.dial,
                "pause_recording": self.pause_recording,
                "transcript": self.transcript,
                "click_to_call": self.click_to_call,
                "call_status": self.call_status,
            },
        )

    async def serve(self, stop: asyncio.Event) -> None:
        fresh = await asyncio.to_thread(self.clips.prewarm)
        spec = self.spec
        log.info(
            "worker %s: %d prompt clips rendered, SIP on %s:%d",
            self.name,
            fresh,
            spec.sip.bind,
            spec.sip.port,
        )
        loop = asyncio.get_running_loop()
        self.engine = SipEngine(spec.sip, loop, self, media_bind=spec.media_bind, proxy=spec.proxy)
        self.kit = self._kit(self.engine)
        proxy = spec.proxy is not None
        self.ivr = IvrCalls(self.kit, self.table, self._background, proxy)
        self.placed = PlacedCalls(self.kit, self.table, self.engine, self._start, proxy)
        writer = asyncio.create_task(self.writes.run(), name="write-behind")
        self.ids.refill_soon()  # the first calls may come before: they write their rows now
        self.engine.start()
        await self.control.start()
        try:
            await stop.wait()
            await self.drain(self.cfg.workers.drain_timeout)
        finally:
            await self.control.close()
            await asyncio.to_thread(self.engine.stop)
            if self._watchers:
                await asyncio.wait(set(self._watchers), timeout=30)
            await self.kit.recorder.close_remaining()
            await self._keep_writes(writer)

    async def _keep_writes(self, writer: asyncio.Task[None]) -> None:
        """At the end: write what the calls owe, or spool it for the next worker of this name."""
        if not await self.writes.flush(WRITES_FLUSH_S):
            log.warning("worker %s: %d call writes kept in %s for the next start", self.name,
                        self.writes.pending, self.writes.spool)  # fmt: skip
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        self.writes.keep_the_rest()

    async def _close_replayed(self, call_ids: list[int]) -> None:
        """The calls whose rows this worker's spool held from its dead predecessor: nobody
        else knew of them. Closed as interrupted, their recordings repaired, as the supervisor
        closes the calls it can see (voice/supervisor.py)."""
        reason = f"call worker {self.name} stopped during the call (its writes kept)"
        try:
            closed = await retry_db(
                DB_TRIES, self.journal.interrupt_calls, self.name, reason, call_ids
            )
            repaired = await retry_db(DB_TRIES, self.book.repair_calls, call_ids)
        except DB_ERRORS as exc:
            log.error("worker %s: calls from the spool not closed now (%s); the next start "
                      "closes them", self.name, exc)  # fmt: skip
            return
        log.warning("worker %s: %d call(s) from the spool marked interrupted, %d recording(s) "
                    "repaired", self.name, len(closed), len(repaired))  # fmt: skip

    def _kit(self, engine: SipEngine) -> CallKit:
        asr, sessions = self.cfg.asr, self.sessions
        recorder = Recorder(
            engine,
            self.book,
            self.metrics,
            self.model,
            self.phrases,
            live=asr.live,
            transcripts=asr.transcripts,
            speech_closed=lambda rid: live_marker(sessions, rid, asr),  # after-call job?
            ids=self.ids,
            writes=self.writes,
        )
        return CallKit(
            self.cfg,
            self.name,
            sessions,
            self.journal,
            self.book,
            recorder,
            self.place_leg,
            self.metrics,
            self.writes,
            self.ids,
        )

    async def drain(self, timeout: float) -> None:
        """Stop taking calls, let calls in progress finish, then end what is left."""
        assert self.engine is not None
        self.engine.draining = True
        tasks = {s.task for s in self.table if s.task is not None}
        if not tasks:
            return
        log.info("worker %s: draining %d call(s), up to %g s", self.name, len(tasks), timeout)
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        # Cancelling a script files its note as interrupted ("server shutting down").
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        for call in list(self.calls.values()):
            await call.hangup()

    # -- control channel ----------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        assert self.engine is not None
        return {
            "name": self.name,
            "pid": os.getpid(),
            "calls": len(self.calls),
            "max_calls": self.spec.sip.max_calls,
            "draining": self.engine.draining,
            "counters": {**self.engine.counters, **self.metrics},
            "call_ids": self.table.call_ids(),
        }

    def _session(self, call_id: int) -> CallSession | None:
        return self.table.by_id(call_id)

    async def hangup(self, call_id: int) -> dict[str, Any]:
        session = self._session(call_id)
        if session is None or (call := self.calls.get(session.key)) is None:
            raise LookupError(f"no call {call_id} on {self.name}")
        await call.hangup()
        return {"call_id": call_id}

    async def dial(self, to: str) -> dict[str, Any]:
        """Call a softphone user or a phone number through Kamailio and run the IVR for them."""
        assert self.engine is not None
        if self.spec.proxy is None:
            raise RuntimeError("placing calls needs Kamailio (workers.count != 1)")
        if not DIALABLE.fullmatch(to):
            raise ValueError("'to' must be a phone number or a softphone user name")
        identity = await self.engine.dial(f"sip:{to}@{self.cfg.kamailio.realm}")
        # `outgoing` ran before this resumes (the engine posts it before returning).
        for _ in range(100):
            session = self.table.by_key(identity.key)
            if session is None:
                break
            if session.call_id is not None:
                return {"call_id": session.call_id, "sip_call_id": identity.sip_call_id}
            await asyncio.sleep(0.01)
        return {"call_id": None, "sip_call_id": identity.sip_call_id}

    async def transcript(self, call_id: int) -> dict[str, Any]:
        """The call's transcript so far, words in progress included (the live view)."""
        session = self._session(call_id)
        speech = session.media.speech if session and session.media else None
        if speech is None:
            raise LookupError(f"no live transcript for call {call_id} on {self.name}")
        return {"call_id": call_id, **speech.snapshot()}

    async def pause_recording(self, call_id: int, paused: bool) -> dict[str, Any]:
        """PCI: silence into the call's recordings and recognisers while card details are
        given, and mark the gap on each recording (voice/calls/media.py)."""
        session = self._session(call_id)
        paused = bool(paused)
        at = await session.media.pause(paused, session.key) if session and session.media else None
        if at is None:
            raise LookupError(f"no recording in progress for call {call_id} on {self.name}")
        return {"call_id": call_id, "paused": paused, "at_s": at}

    async def call_status(self, call_id: int) -> dict[str, Any]:
        """A collector-placed call's progress, from its events (any worker's, in the DB)."""
        events = await asyncio.to_thread(self.journal.events, int(call_id))
        return {
            "call_id": int(call_id),
            "status": outbound.status_of(events),
            "events": [{"kind": k, **d} for k, d in events],
        }

    # -- Events (on the loop) -----------------------------------------------------------------

    def incoming(self, identity: CallIdentity) -> None:
        self._track(identity, ANSWER_TIMEOUT)

    def outgoing(self, identity: CallIdentity) -> None:
        self._track(identity, RING_TIMEOUT)

    def _track(self, identity: CallIdentity, answer_timeout: float) -> None:
        assert self.engine is not None and self.ivr is not None
        call = SipCall(self.engine, identity, self.clips.render, answer_timeout)
        self.calls[identity.key] = call
        if identity.purpose == "leg":  # driven by whoever placed it (voice/calls/line.py)
            self._new_legs[identity.key] = call
            return
        session = CallSession(call)
        assert self.placed is not None
        run = self.placed.softphone(session) if identity.softphone else self.ivr.run(session)
        self._start(session, run, f"call-{identity.key}")

    def _start(self, session: CallSession, run: Coroutine[Any, Any, None], name: str) -> None:
        self.table.add(session)
        session.task = asyncio.create_task(run, name=name)
        session.task.add_done_callback(lambda _t: self.table.forget(session.key))

    def confirmed(self, key: int) -> None:
        if call := self.calls.get(key):
            call.on_confirmed()

    def digit(self, key: int, digit: str) -> None:
        if call := self.calls.get(key):
            call.on_digit(digit)

    def disconnected(self, key: int, code: int, reason: str) -> None:
        if call := self.calls.pop(key, None):
            call.on_disconnected(code, reason)
        if self.kit is not None:
            self.kit.recorder.ended(key)

    def recording_closed(self, key: int) -> None:
        if self.kit is not None:
            self.kit.recorder.closed(key)

    def refused(self, identity: CallIdentity, code: int, reason: str) -> None:
        log.warning(
            "refused call %s from %s: %d %s",
            identity.sip_call_id,
            identity.remote_uri,
            code,
            reason,
        )

    # -- collectors' calls ------------------------------------------------------------------------

    async def place_leg(
        self, uri: str, *, from_uri: str | None = None, headers: tuple[tuple[str, str], ...] = ()
    ) -> SipCall:
        """Place a call that runs no IVR (a collector, a click-to-call customer)."""
        assert self.engine is not None
        if not LEG_URI.fullmatch(uri):
            raise ValueError(f"not a SIP URI a call may be placed to: {uri!r}")
        identity = await self.engine.dial(uri, from_uri=from_uri, headers=headers, purpose="leg")
        # `outgoing` ran before this resumes (the engine posts it before returning).
        return self._new_legs.pop(identity.key)

    async def click_to_call(self, **request: Any) -> dict[str, Any]:
        """Ring the collector, then dial the customer and bridge them (voice/calls/placed.py)."""
        assert self.placed is not None
        return await self.placed.click_to_call(**request)

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)


def run(cfg: Config, spec: WorkerSpec, model: Any = None, *, load: bool = False) -> None:
    """Serve until SIGTERM. `model`: the zygote's preloaded Vosk model; `load`: load it here."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if load and model is None:
        model = load_model(cfg.asr.model)
    if model is not None:
        limit_arenas()  # recogniser threads come and go with calls: see voice/asr/memory.py

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Worker(cfg, spec, model).serve(stop)

    asyncio.run(main())
