"""`/metrics`: the fleet's prometheus_client instruments plus the supervisor's health report.

Workers count in prometheus_client's multiprocess mode (voice/telemetry.py, accounts/retry.py):
one set of mmapped files per process in `metrics_dir(cfg)`, which the supervisor empties at
start, so every process that ever served this run is summed. Counters and histograms of a
worker that died stay in the sums (the fleet's totals never go down when a worker is killed);
its live gauges are removed (`process_dead`). Fleet state (workers up, memory, restarts) comes
from the health report at scrape time, and the after-call transcription queue from the
database.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy.orm import Session, sessionmaker

from accounts.retry import DB_ERRORS
from voice.config import Config
from voice.fleet import run_dir

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_dir(cfg: Config) -> Path:
    return run_dir(cfg) / "metrics"


def fresh_dir(path: Path) -> Path:
    """An empty directory for this run's files: values left by an earlier run are not ours."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def process_dead(path: Path, pid: int | None) -> None:
    """A worker is gone: its live gauges (calls waiting on the database) leave the sums."""
    if pid is not None:
        mark_process_dead(pid, str(path))


def scrape(
    health: dict[str, Any],
    cfg: Config,
    sessions: sessionmaker[Session],
    backlog: Callable[[Session], dict[str, Any]] | None = None,
) -> str:
    """What `GET /metrics` answers (blocking: file and database reads). `backlog`: the
    transcription queue's figures (accounts/transcription.backlog_stats)."""
    transcription = None
    if backlog is not None:
        try:
            with sessions() as session:
                transcription = backlog(session)
        except DB_ERRORS as exc:  # the rest of the scrape must not wait for the database
            log.warning("metrics: transcription backlog not read: %s", exc)
    return render(health, metrics_dir(cfg), transcription)


def render(
    health: dict[str, Any], path: Path | None = None, transcription: dict[str, Any] | None = None
) -> str:
    """The text exposition: the files under `path` (None: none), `health`, `transcription`
    (accounts/transcription.backlog_stats; None: not measured)."""
    registry = CollectorRegistry(auto_describe=False)
    if path is not None and path.is_dir():
        registry.register(_Files(path))
    registry.register(_Health(health))
    if transcription is not None:
        registry.register(_Transcription(transcription))
    return generate_latest(registry).decode()


class _Files:
    """MultiProcessCollector that skips a file it cannot read instead of failing the scrape
    (a process killed while growing its file)."""

    def __init__(self, path: Path) -> None:
        self._path = str(path)

    def collect(self) -> Iterable[Metric]:
        files = glob.glob(os.path.join(self._path, "*.db"))
        try:
            return MultiProcessCollector.merge(files, accumulate=True)
        except Exception:  # find the bad file, report the rest
            good = [f for f in files if _readable(f)]
            return MultiProcessCollector.merge(good, accumulate=True)


def _readable(file: str) -> bool:
    try:
        MultiProcessCollector.merge([file], accumulate=True)
    except Exception:
        log.error("metrics: skipping unreadable %s", file)
        return False
    return True


class _Health:
    def __init__(self, health: dict[str, Any]) -> None:
        self._health = health

    def collect(self) -> Iterator[Metric]:
        health = self._health
        workers = health["workers"]
        yield _gauge(
            "voice_up",
            "1 when every worker and Kamailio are ready.",
            [((), 1.0 if health["status"] == "ok" else 0.0)],
        )
        ready = sum(1 for w in workers if w["ready"])
        yield _gauge(
            "voice_workers",
            "Call workers by state.",
            [(("ready",), ready), (("down",), len(workers) - ready)],
            ["state"],
        )
        yield _gauge(
            "voice_calls_active", "Calls in progress.", [((), health["capacity"]["calls"])]
        )
        yield _gauge(
            "voice_call_capacity",
            "Call slots of the ready workers.",
            [((), health["capacity"]["max_calls"])],
        )
        restarts = CounterMetricFamily(
            "voice_worker_restarts", "Worker restarts after a crash.", labels=["worker"]
        )
        for w in workers:
            restarts.add_metric([w["name"]], w["restarts"])
        yield restarts
        memory = [(w["name"], w["memory_kb"]) for w in workers if w["memory_kb"]]
        yield _gauge(
            "voice_worker_pss_bytes",
            "Proportional set size of each worker.",
            [((n,), m["pss_kb"] * 1024) for n, m in memory],
            ["worker"],
        )
        cpu = CounterMetricFamily(
            "voice_worker_cpu_seconds", "CPU time of each worker.", labels=["worker"]
        )
        for name, m in memory:
            cpu.add_metric([name], m["cpu_s"])
        yield cpu
        yield _gauge(
            "voice_memory_pss_bytes",
            "Proportional set size of the whole server.",
            [((), health["memory_total_pss_kb"] * 1024)],
        )


class _Transcription:
    def __init__(self, stats: dict[str, Any]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        yield _gauge(
            "voice_transcription_jobs_pending",
            "After-call transcription jobs not landed yet (pending or running).",
            [((), stats["pending"])],
        )
        yield _gauge(
            "voice_transcription_oldest_pending_seconds",
            "Age of the oldest transcription job not landed yet (0: none).",
            [((), stats["oldest_pending_s"])],
        )
        yield _gauge(
            "voice_transcription_jobs_failed",
            "Transcription jobs that gave up.",
            [((), stats["failed"])],
        )
        if stats.get("rtf") is not None:
            yield _gauge(
                "voice_transcription_realtime_factor",
                "Wall seconds per audio second of the jobs done in the last hour.",
                [((), stats["rtf"])],
            )


def _gauge(
    name: str,
    help_text: str,
    samples: list[tuple[tuple[str, ...], float]],
    labels: list[str] | None = None,
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=labels or [])
    for values, value in samples:
        family.add_metric(list(values), value)
    return family
