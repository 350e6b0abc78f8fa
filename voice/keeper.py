"""Keeps the zygote and what it forks alive: one call worker per `WorkerSpec`, the after-call
transcribers (voice/asr/after.py).

The zygote (voice/zygote.py) preloads modules and the Vosk model, forks on request and reports
each child's start and exit as JSON lines. A dead worker or transcriber is forked again after
`workers.restart_delay`; a dead zygote is started again, and with it every worker (they die
with it). What a worker's death means for its calls is the supervisor's (`on_exit`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from voice import metrics
from voice.config import Config
from voice.fleet import WorkerSpec

log = logging.getLogger(__name__)


@dataclass
class WorkerState:
    spec: WorkerSpec
    pid: int | None = None
    restarts: int = 0
    exits: list[int] = field(default_factory=list)
    started_at: float = 0.0
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def alive(self) -> bool:
        return self.pid is not None


@dataclass
class TranscriberState:
    """An after-call transcription process (voice/asr/after.py), forked by the zygote too."""

    name: str
    pid: int | None = None
    restarts: int = 0
    exits: list[int] = field(default_factory=list)


class ZygoteKeeper:
    def __init__(
        self,
        cfg: Config,
        config_path: str | None,
        workers: dict[str, WorkerState],
        transcribers: dict[str, TranscriberState],
        stopping: asyncio.Event,
        on_exit: Callable[[WorkerState, int], Awaitable[None]],
    ) -> None:
        self._cfg = cfg
        self._config_path = config_path
        self._workers = workers
        self._transcribers = transcribers
        self._stopping = stopping
        self._on_exit = on_exit  # a worker stopped (status: exit code, or -signal)
        self.process: asyncio.subprocess.Process | None = None  # the zygote now
        self.model: str | None = None  # the speech model it loaded
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Until `stopping`: start the zygote, follow it, start it again if it dies."""
        while not self._stopping.is_set():
            cmd = [sys.executable, "-m", "voice"]
            if self._config_path:
                cmd += ["--config", self._config_path]
            cmd.append("zygote")
            # The zygote reads the config again: it must see the same fleet as we do, including
            # a `--workers` given on our command line (else developer mode's one worker would
            # be built as w0 of the default fleet, on workers.sip_port instead of sip.port).
            env = dict(
                os.environ,
                OPENBLAS_NUM_THREADS="1",
                VOICE_WORKERS_COUNT=str(self._cfg.workers.count),
                PROMETHEUS_MULTIPROC_DIR=str(metrics.metrics_dir(self._cfg)),
            )
            self.process = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
            )
            await self._follow(self.process)
            code = await self.process.wait()
            if self._stopping.is_set():
                return
            # Workers die with their zygote (PDEATHSIG): every call they held is interrupted.
            log.error("zygote exited with %s; restarting it and all workers", code)
            for worker in self._workers.values():
                if worker.alive:
                    await self._on_exit(worker, -signal.SIGKILL)
            await asyncio.sleep(self._cfg.workers.restart_delay)

    async def _follow(self, zygote: asyncio.subprocess.Process) -> None:
        assert zygote.stdout is not None
        while line := await zygote.stdout.readline():
            try:
                event = json.loads(line)
            except ValueError:
                log.error("zygote said something unreadable: %r", line[:200])
                continue
            kind = event.get("event")
            if kind == "ready":
                self.model = event.get("model")
                for worker in self._workers.values():
                    self._spawn(worker.spec.name)
                for name in self._transcribers:
                    self._spawn(name)
            elif event.get("name") in self._transcribers:
                self._transcriber_event(self._transcribers[event["name"]], kind, event)
            elif kind == "started":
                worker = self._workers[event["name"]]
                worker.pid, worker.started_at = event["pid"], time.time()
                worker.exited.clear()
            elif kind == "exited":
                worker = self._workers[event["name"]]
                await self._on_exit(worker, event["status"])
                if not self._stopping.is_set():
                    self._restart_later(worker)
            else:
                log.error("zygote: %s", event.get("error", event))

    def _spawn(self, name: str) -> None:
        zygote = self.process
        if zygote is None or zygote.stdin is None or zygote.returncode is not None:
            return
        zygote.stdin.write(json.dumps({"op": "spawn", "name": name}).encode() + b"\n")

    def _transcriber_event(self, state: TranscriberState, kind: str, event: dict[str, Any]) -> None:
        if kind == "started":
            state.pid = event["pid"]
            return
        state.pid = None
        state.exits.append(event["status"])
        if self._stopping.is_set():
            return
        # Its job stays claimed under its name: the replacement takes it back first.
        log.error("transcriber %s stopped (status %s)", state.name, event["status"])

        async def restart() -> None:
            await asyncio.sleep(self._cfg.workers.restart_delay)
            if not self._stopping.is_set() and state.pid is None:
                state.restarts += 1
                self._spawn(state.name)

        self._keep(asyncio.create_task(restart()))

    def _restart_later(self, worker: WorkerState) -> None:
        async def restart() -> None:
            await asyncio.sleep(self._cfg.workers.restart_delay)
            if not self._stopping.is_set() and not worker.alive:
                worker.restarts += 1
                self._spawn(worker.spec.name)

        self._keep(asyncio.create_task(restart()))

    def _keep(self, task: asyncio.Task[None]) -> None:
        # The loop holds tasks weakly: a pending restart must not be collected.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
