"""/metrics of a real fleet: `voice serve` with 2 workers behind Kamailio, called by the scripted
pjsua2 UA (keys by RFC 2833) and placing a call itself, read with Prometheus' text parser.
The histograms must count those calls on both workers, the counters must agree with them and
with the database, and a worker killed with -9 must leave its counts in the sums and the scrape
whole."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.integration.conftest import (
    Server,
    run_ua,
    scrape,
    start_ua,
    wait_for,
)
from tests.integration.fleet import (
    KNOWN,
    SippGateway,
    calls_since,
    last_id,
    running_fleet,
    voice_ctl,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path("/usr/sbin/kamailio").exists() and not os.environ.get("CI"),
        reason="Kamailio is not installed (make test installs it)",
    ),
]
CALLS = 4  # placed at once: Kamailio's round robin gives each worker two
INBOUND = 'voice_call_answer_seconds_count{direction="inbound"}'
OUTBOUND = 'voice_call_answer_seconds_count{direction="outbound"}'
KEYS = "voice_key_to_audio_seconds_count"


def grew(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def owed(metrics: dict[str, float]) -> float:
    """Call writes not done yet, in every state the backlog gauge has."""
    return sum(v for k, v in metrics.items() if k.startswith("voice_journal_backlog{"))


def key_replies_of(server: Server, pid: int) -> float:
    """The key -> audio count in one worker's own file (what it contributed to the sum)."""
    file = server.data_dir / "run" / "metrics" / f"histogram_{pid}.db"
    for family in MultiProcessCollector.merge([str(file)], accumulate=True):
        for sample in family.samples:
            if sample.name == KEYS:
                return sample.value
    return 0.0


def dial_out(server: Server, tmp_path: Path) -> int:
    """One call the fleet places (to the trunk's gateway, a sipp UAS that answers); its id."""
    port = server.gateway_port  # type: ignore[attr-defined]
    with SippGateway(port, tmp_path / "gateway.out") as gateway:
        call_id = int(voice_ctl(server, "dial", KNOWN)["call_id"])
        assert wait_for(lambda: grew(scrape(server), {}, OUTBOUND) >= 1, 15), scrape(server)
        voice_ctl(server, "hangup", str(call_id))
        gateway.ended()
    return call_id


def test_the_fleet_counts_real_calls_on_both_workers_and_survives_a_kill(tmp_path: Path) -> None:
    with running_fleet(tmp_path / "voice", 2) as server:
        before, first = scrape(server), last_id(server)
        reports = run_ua(server, "audio;dtmf:1;audio;wait:1;hangup", caller=KNOWN, calls=CALLS)
        assert all(r["code"] == 200 and not r["error"] for r in reports), reports
        assert wait_for(
            lambda: all(c.status != "in_progress" for c in calls_since(server, first)), 20
        )
        calls = calls_since(server, first)
        assert len(calls) == CALLS
        on = {name: sum(1 for c in calls if c.worker == name) for name in ("w0", "w1")}
        assert on == {"w0": 2, "w1": 2}, on
        after = scrape(server)
        assert grew(after, before, INBOUND) == CALLS
        assert grew(after, before, "voice_calls_answered_total") == CALLS
        assert grew(after, before, KEYS) == CALLS  # one key each, each answered by audio
        assert after['voice_key_to_audio_seconds_bucket{le="+Inf"}'] == after[KEYS]
        # Each worker's own file holds its calls' replies: the sum is over both processes.
        pids = {w["name"]: w["pid"] for w in server.health()["workers"]}
        assert {n: key_replies_of(server, pid) for n, pid in pids.items()} == on
        # The calls wrote their journal, awaited (retry_db) or behind the call (write-behind
        # batches): timed, and in the end nothing is owed.
        writes = grew(after, before, 'voice_db_write_seconds_count{outcome="ok"}')
        batches = grew(after, before, 'voice_journal_batch_seconds_count{outcome="written"}')
        assert writes + batches >= CALLS, (writes, batches)
        assert wait_for(lambda: owed(scrape(server)) == 0, 10), scrape(server)
        # The after-call transcription queue, read from the database at scrape time.
        assert after["voice_transcription_oldest_pending_seconds"] >= 0
        assert "voice_transcription_jobs_pending" in after

        dial_out(server, tmp_path)
        placed = scrape(server)
        assert grew(placed, after, OUTBOUND) == 1
        assert grew(placed, after, "voice_calls_placed_total") == 1

        # A call up on one worker, then that worker is killed outright.
        ua = start_ua(server, "audio;wait:30;hangup", tmp_path / "ua.log", caller=KNOWN)
        try:
            busy = wait_for(lambda: [w for w in server.health()["workers"] if w["calls"]], 15)
            assert busy, server.health()
            victim = busy[0]
            os.kill(victim["pid"], signal.SIGKILL)
            health = wait_for(lambda: (h := server.health())["status"] == "ok" and h["workers"], 30)
            assert health, server.health()
        finally:
            ua.kill()
            ua.wait()
        killed = scrape(server)  # parses, with the dead worker's files still in the folder
        assert grew(killed, placed, "voice_calls_answered_total") == 1  # kept after the kill
        assert killed[INBOUND] == placed[INBOUND] + 1
        assert killed[KEYS] == placed[KEYS]
        assert killed[f'voice_worker_restarts_total{{worker="{victim["name"]}"}}'] == 1
        assert wait_for(lambda: owed(scrape(server)) == 0, 10), scrape(server)
        assert killed["voice_up"] == 1
