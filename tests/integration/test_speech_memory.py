"""A worker's memory stays flat across calls with speech (issue 15).

One real `voice serve --workers 1` with the Korean model; the scripted pjsua2 caller says a
Korean sentence over the menu prompt on each of 20 calls, one after another, into that one
worker. After each call has ended (the worker holds no call and its transcript rows are in),
the worker's PSS is read from /proc. From call 2 to call 20 it may grow by less than 40 MB:
call 1 pays one-off costs (the first recogniser touching the shared model, the first threads'
allocator arenas), every later call must give back what it took.

bench/asr_memory.py runs the same calls and prints the numbers, and the memory per concurrent
speech call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from accounts.models import Transcript
from tests.asr_audio import concat, espeak, silence
from tests.integration.conftest import (
    Server,
    last_call_id,
    run_ua,
    start_server,
    stop_server,
    wait_for,
    write_wav,
)
from tests.integration.test_spoken_menu import KNOWN, MODEL
from voice import procinfo

pytestmark = pytest.mark.integration

CALLS = 20
GROWTH_LIMIT_MB = 40.0
# Short calls: the menu starts, the caller talks over it (a sentence the transcript recogniser
# and the menu grammar both work on), hears the answer begin, hangs up.
STEPS = "audio;wait:2.5;say:{wav};wait:3;hangup"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"VOICE_ASR_MODEL": MODEL, "VOICE_ASR_LANGUAGE": "ko"}
    srv = start_server(tmp_path_factory.mktemp("speech-memory"), env)
    try:
        yield srv
    finally:
        stop_server(srv)


def sentence_wav(folder: Path) -> Path:
    spoken = concat(espeak("마지막 청구서 잔액을 알려 주세요", speed=160), silence(0.4))
    return write_wav(folder / "say.wav", concat(silence(0.3), spoken, espeak("잔액"), silence(0.5)))


def worker_of(server: Server) -> dict[str, object]:
    [worker] = server.health()["workers"]  # type: ignore[misc]
    return worker


def idle_pss_kb(server: Server, pid: int) -> int:
    """The worker's PSS once it holds no call (its speech streams closed with the call)."""
    wait_for(lambda: worker_of(server)["calls"] == 0, timeout=30)
    time.sleep(0.5)  # the call task's last awaits (transcript delivery) after the hang-up
    use = procinfo.usage(pid)
    assert use is not None, "the worker is gone"
    return use.pss_kb


def caller_rows(server: Server, call_id: int) -> int:
    with server.session() as session:
        return session.scalar(
            select(func.count())
            .select_from(Transcript)
            .where(Transcript.call_id == call_id, Transcript.speaker == "caller")
        )


def serve_calls(server: Server, folder: Path, calls: int) -> list[int]:
    """PSS (kB) of the one worker: before the first call, then after each call."""
    wav = sentence_wav(folder)
    pid = int(worker_of(server)["pid"])  # type: ignore[arg-type]
    pss = [idle_pss_kb(server, pid)]
    for i in range(calls):
        [report] = run_ua(server, STEPS.format(wav=wav))
        assert not report["error"], (i, report)
        call_id = last_call_id(server, KNOWN)
        # The caller's speech really went through the recognisers on this call.
        assert wait_for(lambda cid=call_id: caller_rows(server, cid), timeout=20), i
        pss.append(idle_pss_kb(server, pid))
        assert int(worker_of(server)["pid"]) == pid, "the worker was restarted"  # type: ignore[arg-type]
    return pss


def test_worker_memory_is_flat_across_calls_with_speech(server: Server, tmp_path: Path) -> None:
    pss = serve_calls(server, tmp_path, CALLS)
    mb = [round(kb / 1024, 1) for kb in pss]
    growth = (pss[-1] - pss[2]) / 1024  # after call 2 → after call 20
    print(f"worker PSS MB, idle then after each call: {mb}")
    assert growth < GROWTH_LIMIT_MB, f"grew {growth:.1f} MB from call 2 to {CALLS}: {mb}"
