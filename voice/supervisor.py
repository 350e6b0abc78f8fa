"""`voice serve`: the supervisor of the call fleet.

It prepares the database and prompt cache, starts the zygote (which preloads modules and the
Vosk model and forks call workers), keeps one worker per `WorkerSpec` alive (both in
voice/keeper.py), runs Kamailio in front of them (unless in developer mode, one worker on the
public SIP port), and serves HTTP.

A worker that dies takes only its own calls: the supervisor closes those calls as interrupted,
with notes, before it starts the replacement. Shutdown stops new calls (workers answer 503, so
Kamailio has nowhere to send them), lets calls finish within `workers.drain_timeout`, ends the
rest, then stops Kamailio: no process is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

import uvicorn

from accounts.call_journal import CallJournal
from accounts.db import create_schema, make_engine, make_sessions
from accounts.demo import load_demo_if_empty
from accounts.retry import DB_ERRORS, DB_TRIES, retry_db
from accounts.webhook import run_outbox
from recordings.book import RecordingBook
from recordings.retention import run_purge
from voice import control, metrics
from voice.app import build_app
from voice.asr.after import transcriber_names
from voice.config import Config
from voice.fleet import run_dir, uses_kamailio, worker_specs
from voice.fleet_ops import FleetOps
from voice.ivr.clips import ClipLibrary
from voice.keeper import TranscriberState, WorkerState, ZygoteKeeper

log = logging.getLogger(__name__)
HTTP_SHUTDOWN_S = 5  # seconds requests still running at shutdown get to finish

STOP_GRACE = 15.0  # seconds beyond drain_timeout before a worker is killed


class Supervisor:
    def __init__(self, cfg: Config, config_path: str | None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.workers = {spec.name: WorkerState(spec) for spec in worker_specs(cfg)}
        self.transcribers = {n: TranscriberState(n) for n in transcriber_names(cfg)}
        self.kamailio: Any = None
        self._stopping = asyncio.Event()
        self._keeper = ZygoteKeeper(
            cfg, config_path, self.workers, self.transcribers, self._stopping, self._worker_exited
        )
        self._journal: CallJournal | None = None
        self._book: RecordingBook | None = None
        # What the API, the pages and `voice ctl` ask of the fleet (voice/fleet_ops.py).
        self.ops = FleetOps(
            cfg, self.workers, self.transcribers, self._keeper, self._stopping,
            lambda: self.kamailio,
        )  # fmt: skip
        self._control = control.ControlServer(
            run_dir(cfg) / "supervisor.sock",
            {"health": self.ops.health, "dial": self.ops.dial, "hangup": self.ops.hangup},
        )

    @property
    def model(self) -> str | None:
        """The speech model the zygote loaded (None: keypad only, or not started yet)."""
        return self._keeper.model

    # -- start-up -----------------------------------------------------------------------------

    def prepare(self) -> None:
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        metrics.fresh_dir(metrics.metrics_dir(self.cfg))  # before any worker writes there
        db = make_engine(self.cfg.database_url, self.cfg.database.busy_timeout_ms)
        create_schema(db)
        sessions = make_sessions(db)
        if self.cfg.accounts.demo_data and load_demo_if_empty(sessions):
            log.info("empty database: demo accounts loaded")
        self._journal = CallJournal(sessions)
        # Calls left in progress by a previous run that was killed outright.
        for name in self.workers:
            if closed := self._journal.interrupt_calls(name, "server stopped during the call"):
                log.warning("closed %d call(s) %s left in progress", len(closed), name)
        self._book = RecordingBook(sessions, self.cfg)
        if repaired := self._book.repair_orphans():
            log.warning("repaired %d recording(s) cut off by a crash", len(repaired))
        clips = ClipLibrary(
            self.cfg.tts,
            self.cfg.data_dir / "cache" / "tts",
            self.cfg.prompts_dir,
            self.cfg.ivr.company_name,
        )
        log.info("prompt cache ready (%d clips rendered)", clips.prewarm())

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        server = uvicorn.Server(
            uvicorn.Config(
                build_app(self.ops),
                host=self.cfg.http.host,
                port=self.cfg.http.port,
                log_level="warning",
                lifespan="on",
                # Open event streams (a live call's page) would hold shutdown until the browser
                # goes away: after this long, what is still in flight is cancelled.
                timeout_graceful_shutdown=HTTP_SHUTDOWN_S,
            )
        )
        server.install_signal_handlers = lambda: None  # signals are ours
        http = asyncio.create_task(server.serve())
        keeper = asyncio.create_task(self._keeper.run())
        # Housekeeping that must run once per machine, not once per worker.
        chores = [
            asyncio.create_task(run_outbox(self.cfg, self._stopping)),
            asyncio.create_task(run_purge(self.cfg, self._stopping)),
        ]
        try:
            await self._control.start()
            if uses_kamailio(self.cfg):
                await self._start_kamailio()
            await self._stopping.wait()
        finally:
            # Also on a failed start: no worker, zygote or Kamailio may outlive us.
            self._stopping.set()
            await self._shutdown()
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await asyncio.gather(*chores, return_exceptions=True)
            await self._control.close()
            server.should_exit = True
            await http

    async def _start_kamailio(self) -> None:
        from voice.routing.kamailio import Kamailio
        from voice.routing.kamailio_config import WorkerAddress

        addresses = [
            WorkerAddress(w.spec.name, w.spec.sip.bind, w.spec.sip.port)
            for w in self.workers.values()
        ]
        self.kamailio = Kamailio(self.cfg, addresses, run_dir(self.cfg) / "kamailio")
        await self.kamailio.start()
        log.info(
            "Kamailio on %s:%d in front of %d workers",
            self.cfg.sip.bind,
            self.cfg.sip.port,
            len(self.workers),
        )

    # -- a worker's death -------------------------------------------------------------------

    async def _worker_exited(self, worker: WorkerState, status: int) -> None:
        metrics.process_dead(metrics.metrics_dir(self.cfg), worker.pid)
        worker.pid = None
        worker.exits.append(status)
        worker.exited.set()
        if self._stopping.is_set() and status == 0:
            return
        how = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
        log.error("worker %s stopped (%s)", worker.spec.name, how)
        # Close its calls before the replacement (same name) can start new ones. A database
        # that refuses past the retries must not stop this: the caller is the task that follows
        # the zygote, and with it gone no worker would be restarted again. The calls left open
        # are closed by the next start's repair (see `run`).
        assert self._journal is not None and self._book is not None
        try:
            closed = await retry_db(
                DB_TRIES,
                self._journal.interrupt_calls,
                worker.spec.name,
                f"call worker {worker.spec.name} stopped ({how})",
            )
            if closed:
                log.warning("worker %s: %d call(s) marked interrupted", worker.spec.name,
                            len(closed))  # fmt: skip
                repaired = await retry_db(DB_TRIES, self._book.repair_calls, closed)
                log.warning("worker %s: %d recording(s) repaired", worker.spec.name,
                            len(repaired))  # fmt: skip
        except DB_ERRORS as exc:
            log.error("worker %s: its calls could not be closed now (%s); the next start "
                      "closes them", worker.spec.name, exc)  # fmt: skip

    # -- shutdown -----------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        live = [w for w in self.workers.values() if w.alive]
        log.info("stopping: draining %d worker(s)", len(live))
        for worker in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)  # type: ignore[arg-type]
        deadline = self.cfg.workers.drain_timeout + STOP_GRACE
        waits = [asyncio.create_task(w.exited.wait()) for w in live]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=deadline)
            for task in pending:
                task.cancel()
        for worker in self.workers.values():
            if worker.alive:
                log.error("worker %s did not stop in time: killing it", worker.spec.name)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]
        zygote = self._keeper.process
        if zygote is not None and zygote.returncode is None:
            assert zygote.stdin is not None
            zygote.stdin.close()  # end of commands: it reaps what is left and exits
            try:
                await asyncio.wait_for(zygote.wait(), 10.0)
            except TimeoutError:
                zygote.kill()
                await zygote.wait()
        if self.kamailio is not None:
            await self.kamailio.stop()
