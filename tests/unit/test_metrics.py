"""/metrics: what worker processes counted (prometheus_client's multiprocess files, written by
real separate processes here), the supervisor's health report, the transcription queue; read
back with Prometheus' own text parser."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from accounts.call_journal import CallJournal
from accounts.retry import retry_db
from voice import telemetry
from voice.metrics import fresh_dir, process_dead, render

REPO = Path(__file__).resolve().parents[2]


def worker(name: str, ready: bool = True) -> dict[str, object]:
    return {
        "name": name,
        "ready": ready,
        "restarts": 1 if name == "w1" else 0,
        "memory_kb": {"rss_kb": 9, "pss_kb": 100, "uss_kb": 5, "cpu_s": 1.5} if ready else None,
    }


HEALTH = {
    "status": "degraded",
    "workers": [worker("w0"), worker("w1"), worker("w2", ready=False)],
    "capacity": {"calls": 2, "max_calls": 8},
    "memory_total_pss_kb": 1000,
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition by (name, sorted labels); the parser rejects bad text."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def worker_process(path: Path, script: str) -> int:
    """Run `script` in a new process counting into `path`, as a worker does; its pid."""
    code = "import os, json\nfrom voice import telemetry\nfrom accounts import retry\n" + script
    code += "\nprint(os.getpid())"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode()
    return int(out.stdout.split()[-1])


W0 = """
c = telemetry.Counts()
c["calls_answered"] += 3
c["calls_refused_486"] += 2
c["recordings_total"] += 3
c["transcript_segments_total"] += 9  # health only: never exposed
telemetry.ANSWER_SECONDS.labels("inbound").observe(0.004)
telemetry.KEY_TO_AUDIO_SECONDS.observe(0.12)
retry.WRITE_SECONDS.labels("ok").observe(0.003)
retry.BACKLOG.labels("waiting").inc(2)  # still waiting when it dies
"""
W1 = """
c = telemetry.Counts()
c["calls_answered"] += 4
c["calls_refused_503"] += 1
c["calls_refused_486"] += 1
telemetry.ANSWER_SECONDS.labels("inbound").observe(0.02)
telemetry.ANSWER_SECONDS.labels("outbound").observe(7.0)
telemetry.KEY_TO_AUDIO_SECONDS.observe(0.4)
telemetry.SPEECH_TO_AUDIO_SECONDS.observe(0.9)
retry.BACKLOG.labels("waiting").inc()
retry.BACKLOG.labels("retrying").inc()
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    path = fresh_dir(tmp_path_factory.mktemp("run") / "metrics")
    return path, worker_process(path, W0), worker_process(path, W1)


def test_worker_processes_are_summed(fleet: tuple[Path, int, int]) -> None:
    path, _, _ = fleet
    got = samples(render(HEALTH, path))
    assert got["voice_calls_answered_total", ()] == 7
    assert got["voice_calls_refused_total", (("code", "486"),)] == 3
    assert got["voice_calls_refused_total", (("code", "503"),)] == 1
    assert got["voice_recordings_total", ()] == 3
    assert got["voice_recordings_incomplete_total", ()] == 0
    assert not [k for k in got if "segments" in k[0]]
    inbound = (("direction", "inbound"),)
    assert got["voice_call_answer_seconds_count", inbound] == 2
    assert got["voice_call_answer_seconds_sum", inbound] == pytest.approx(0.024)
    assert got["voice_call_answer_seconds_bucket", (("direction", "inbound"), ("le", "0.005"))] == 1
    assert got["voice_call_answer_seconds_count", (("direction", "outbound"),)] == 1
    assert got["voice_key_to_audio_seconds_count", ()] == 2
    assert got["voice_key_to_audio_seconds_bucket", (("le", "0.15"),)] == 1
    assert got["voice_key_to_audio_seconds_bucket", (("le", "+Inf"),)] == 2
    assert got["voice_speech_to_audio_seconds_count", ()] == 1
    assert got["voice_db_write_seconds_count", (("outcome", "ok"),)] == 1
    assert got["voice_journal_backlog", (("state", "waiting"),)] == 3
    assert got["voice_journal_backlog", (("state", "retrying"),)] == 1


def copy_of(path: Path, tmp_path: Path) -> Path:
    """The fleet's files in a folder of the test's own (the module's stay as written)."""
    copy = tmp_path / "metrics"
    copy.mkdir()
    for file in path.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    return copy


def test_a_dead_worker_keeps_its_counts_but_not_its_backlog(
    fleet: tuple[Path, int, int], tmp_path: Path
) -> None:
    path, w0, _ = fleet
    dead = copy_of(path, tmp_path)
    process_dead(dead, w0)
    got = samples(render(HEALTH, dead))
    assert got["voice_calls_answered_total", ()] == 7  # totals never go down
    assert got["voice_key_to_audio_seconds_count", ()] == 2
    assert got["voice_journal_backlog", (("state", "waiting"),)] == 1  # w1's only


def test_an_unreadable_file_is_skipped_not_fatal(
    fleet: tuple[Path, int, int], tmp_path: Path
) -> None:
    path, _, _ = fleet
    torn = copy_of(path, tmp_path)
    # A file whose first entry claims more bytes than the file holds: prometheus_client's
    # reader raises on it ("file is corrupted").
    entry = struct.pack("i", 1000) + bytes(52)
    (torn / "counter_99999.db").write_bytes(struct.pack("i", 64) + bytes(4) + entry)
    with pytest.raises(RuntimeError, match="corrupted"):
        list(MultiProcessCollector.merge([str(torn / "counter_99999.db")]))
    got = samples(render(HEALTH, torn))
    assert got["voice_calls_answered_total", ()] == 7


def test_fleet_state_comes_from_the_health_report() -> None:
    got = samples(render(HEALTH))
    assert got["voice_up", ()] == 0
    assert got["voice_workers", (("state", "ready"),)] == 2
    assert got["voice_workers", (("state", "down"),)] == 1
    assert got["voice_calls_active", ()] == 2
    assert got["voice_call_capacity", ()] == 8
    assert got["voice_worker_restarts_total", (("worker", "w1"),)] == 1
    assert got["voice_worker_pss_bytes", (("worker", "w0"),)] == 102400
    assert got["voice_worker_cpu_seconds_total", (("worker", "w0"),)] == 1.5
    assert ("voice_worker_pss_bytes", (("worker", "w2"),)) not in got  # down: not measured
    assert got["voice_memory_pss_bytes", ()] == 1024000


def test_the_transcription_queue_is_rendered_as_gauges() -> None:
    stats = {"pending": 3, "oldest_pending_s": 41.5, "failed": 1, "rtf": 0.25}
    got = samples(render(HEALTH, None, stats))
    assert got["voice_transcription_jobs_pending", ()] == 3
    assert got["voice_transcription_oldest_pending_seconds", ()] == 41.5
    assert got["voice_transcription_jobs_failed", ()] == 1
    assert got["voice_transcription_realtime_factor", ()] == 0.25
    quiet = samples(render(HEALTH, None, {**stats, "rtf": None}))
    assert ("voice_transcription_realtime_factor", ()) not in quiet  # no job done lately


def test_every_metric_is_documented_in_the_readme(fleet: tuple[Path, int, int]) -> None:
    path, _, _ = fleet
    stats = {"pending": 0, "oldest_pending_s": 0.0, "failed": 0, "rtf": 1.0}
    text = render(HEALTH, path, stats)
    names = {f.name for f in text_string_to_metric_families(text)}
    readme = (REPO / "README.md").read_text()
    missing = [n for n in sorted(names) if f"`{n}" not in readme]
    assert not missing, missing


def value(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_a_refused_write_is_retried_timed_and_leaves_no_backlog() -> None:
    tries: list[int] = []

    def write() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return "written"

    before = {
        "retries": value("voice_db_write_retries_total"),
        "ok": value("voice_db_write_seconds_count", {"outcome": "ok"}),
    }
    assert await retry_db(3, write) == "written"
    assert len(tries) == 2
    assert value("voice_db_write_retries_total") == before["retries"] + 1
    assert value("voice_db_write_seconds_count", {"outcome": "ok"}) == before["ok"] + 1
    assert value("voice_journal_backlog", {"state": "waiting"}) == 0
    assert value("voice_journal_backlog", {"state": "retrying"}) == 0


async def test_a_write_given_up_is_counted_as_failed() -> None:
    def write() -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    before = value("voice_db_write_seconds_count", {"outcome": "failed"})
    with pytest.raises(OperationalError):
        await retry_db(1, write)
    assert value("voice_db_write_seconds_count", {"outcome": "failed"}) == before + 1
    assert value("voice_journal_backlog", {"state": "waiting"}) == 0


def test_counts_are_a_counter_for_health_and_metrics_alike() -> None:
    counts = telemetry.Counts()
    before = value("voice_calls_placed_total")
    counts["calls_placed"] += 1
    counts["calls_placed"] += 2
    counts["bridges"] += 1  # health only
    assert dict(counts) == {"calls_placed": 3, "bridges": 1}
    assert value("voice_calls_placed_total") == before + 3
    assert json.loads(json.dumps({**counts})) == {"calls_placed": 3, "bridges": 1}


def test_a_reply_is_timed_from_the_key_that_answered_to_its_first_frame() -> None:
    clock = telemetry.ReplyClock()
    assert clock.on_start() is None  # a prompt nobody answered: no reply to time
    before = value("voice_key_to_audio_seconds_count")
    clock.key()
    clock.answered_by_key()
    started = clock.on_start()
    assert started is not None and clock.on_start() is None  # only the first audio after it
    started()
    assert value("voice_key_to_audio_seconds_count") == before + 1


def test_a_spoken_answer_is_timed_from_the_end_of_the_speech_not_its_recognition() -> None:
    clock = telemetry.ReplyClock()
    before = value("voice_speech_to_audio_seconds_sum")
    # The utterance ended at 12.0 s into the call; the caller's audio is at 12.7 s by now.
    clock.heard(end=12.0, heard_until=12.7)
    clock.answered_by_speech()
    started = clock.on_start()
    assert started is not None
    started()
    assert 0.7 <= value("voice_speech_to_audio_seconds_sum") - before < 1.5


async def test_the_write_behind_shows_its_queue_and_times_its_transactions(
    db_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    from accounts.write_behind import WriteBehind

    call_id = CallJournal(db_sessions).start_call(
        direction="inbound", caller="+12125550101", callee="ivr", worker="w0", sip_call_id="m1"
    )
    writer = WriteBehind(db_sessions, tmp_path / "spool" / "w0.jsonl")
    written = value("voice_journal_batch_seconds_count", {"outcome": "written"})
    writer.submit("answered", call_id)
    writer.submit("add_event", call_id, kind="prompt", detail={"tokens": ["menu"]})
    assert value("voice_journal_backlog", {"state": "queued"}) == 2  # before the writer runs
    task = asyncio.create_task(writer.run())
    try:
        assert await writer.flush(10)
        assert value("voice_journal_backlog", {"state": "queued"}) == 0
        assert value("voice_journal_backlog", {"state": "spooled"}) == 0
        assert value("voice_journal_batch_seconds_count", {"outcome": "written"}) == written + 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
