"""`voice serve`: prepares the database and prompt cache, then runs and restarts call workers.

Until the fleet (Kamailio in front of many workers) lands, it runs exactly one worker directly
on the SIP port. Workers are separate processes so that a crash in pjsua2 takes only its calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import uvicorn

from accounts.db import create_schema, make_engine, make_sessions
from accounts.demo import load_demo_if_empty
from voice.app import build_app
from voice.config import Config, ConfigError
from voice.ivr.clips import ClipLibrary

log = logging.getLogger(__name__)

STOP_TIMEOUT = 40.0  # seconds a worker gets to drain its calls after SIGTERM


@dataclass
class WorkerProcess:
    name: str
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    exits: list[int] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class Supervisor:
    def __init__(self, cfg: Config, config_path: str | None) -> None:
        if cfg.workers.count != 1:
            raise ConfigError(
                "workers.count: only 1 is supported until the Kamailio fleet lands (developer mode)"
            )
        self.cfg = cfg
        self.config_path = config_path
        self.workers = [WorkerProcess(f"w{i}") for i in range(cfg.workers.count)]
        self._stopping = asyncio.Event()

    def prepare(self) -> None:
        self.cfg.data_dir.mkdir(parents=True, exist_ok=True)
        db = make_engine(self.cfg.database_url, self.cfg.database.busy_timeout_ms)
        create_schema(db)
        if self.cfg.accounts.demo_data and load_demo_if_empty(make_sessions(db)):
            log.info("empty database: demo accounts loaded")
        db.dispose()
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
                build_app(self),
                host=self.cfg.http.host,
                port=self.cfg.http.port,
                log_level="warning",
                lifespan="on",
            )
        )
        server.install_signal_handlers = lambda: None  # signals are ours
        http = asyncio.create_task(server.serve())
        keepers = [asyncio.create_task(self._keep(w)) for w in self.workers]
        await self._stopping.wait()
        await asyncio.gather(*(self._stop(w) for w in self.workers))
        for task in keepers:
            task.cancel()
        server.should_exit = True
        await http

    async def _keep(self, worker: WorkerProcess) -> None:
        while not self._stopping.is_set():
            cmd = [sys.executable, "-m", "voice", "worker", "--name", worker.name]
            if self.config_path:
                cmd += ["--config", self.config_path]
            worker.proc = await asyncio.create_subprocess_exec(*cmd, env=dict(os.environ))
            worker.started_at = time.time()
            code = await worker.proc.wait()
            worker.exits.append(code)
            if self._stopping.is_set():
                return
            worker.restarts += 1
            log.error("worker %s exited with %s; restarting", worker.name, code)
            await asyncio.sleep(self.cfg.workers.restart_delay)

    async def _stop(self, worker: WorkerProcess) -> None:
        proc = worker.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def health(self) -> dict[str, object]:
        workers = [
            {
                "name": w.name,
                "alive": w.alive,
                "pid": w.proc.pid if w.proc else None,
                "restarts": w.restarts,
            }
            for w in self.workers
        ]
        return {
            "status": "ok" if all(w["alive"] for w in workers) else "degraded",
            "workers": workers,
        }
