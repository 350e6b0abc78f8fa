"""The after-call transcription queue (accounts/transcription.py) on SQLite and PostgreSQL:
which recordings get a job, claiming, backoff, the third failure kept, leases, the note's line,
the backlog figures. Two runners on PostgreSQL never hold the same job."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from accounts import transcription as jobs
from accounts.call_journal import owe_transcript
from accounts.db import make_sessions
from accounts.models import Account, Note, Recording, Transcript, WebhookOutbox, utcnow
from accounts.transcription import TranscriptionJob
from accounts.webhook import TRANSCRIPT_EVENT
from tests.unit.recdata import World, build_world
from voice import config
from voice.asr.after import transcriber_names


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    yield from build_world(database_url, tmp_path / "recordings")


def recent_recording(world: World, status: str = "final", ago: float = 600.0) -> int:
    """A call (with its note) and a finished recording, finalised `ago` seconds before now."""
    started = utcnow() - dt.timedelta(seconds=ago + 1)
    call_id = world.call(started_at=started)
    with world.sessions.begin() as session:
        account_id = session.scalar(select(Account.id).where(Account.number == "10042"))
        session.add(
            Note(account_id=account_id, call_id=call_id, author="ivr", kind="call",
                 body="Inbound IVR call.\nEnded: caller hung up.")
        )  # fmt: skip
    return world.recording(call_id, started_at=started, status=status)


def job_of(sessions: sessionmaker[Session], recording_id: int) -> TranscriptionJob:
    with sessions() as session:
        job = session.scalar(
            select(TranscriptionJob).where(TranscriptionJob.recording_id == recording_id)
        )
        assert job is not None
        return job


def note_body(sessions: sessionmaker[Session], call_id: int) -> str:
    with sessions() as session:
        return session.scalars(select(Note.body).where(Note.call_id == call_id)).one()


def test_sweep_queues_what_no_live_transcript_covers(world: World) -> None:
    s = world.sessions
    interrupted = recent_recording(world, "interrupted", ago=1)  # its worker was killed
    fresh = recent_recording(world, ago=1)  # its live path may still be closing
    old = recent_recording(world, ago=jobs.LIVE_GRACE_S + 5)  # nobody marked it
    covered = recent_recording(world, ago=jobs.LIVE_GRACE_S + 5)
    short = recent_recording(world, ago=1)
    with s.begin() as session:
        assert jobs.mark_live(session, covered, True) is not None
        jobs.mark_live(session, short, False, "caller: 2.4 s of audio dropped (recogniser behind)")
    with s.begin() as session:
        assert sorted(jobs.sweep(session, after_only=False)) == sorted([interrupted, old])
    with s.begin() as session:
        assert jobs.sweep(session, after_only=False) == []  # never twice
        assert jobs.sweep(session, after_only=True) == [fresh]  # "after": no live to wait for
    assert job_of(s, covered).state == jobs.LIVE
    assert job_of(s, short).state == jobs.PENDING
    assert "audio dropped" in job_of(s, short).reason
    assert "worker stopped" in job_of(s, interrupted).reason
    with s.begin() as session:  # the live path's word comes late: the sweep's row stands
        assert jobs.mark_live(session, old, True) is None
    assert job_of(s, old).state == jobs.PENDING
    call_id = job_of(s, short).call_id
    assert f"Transcript pending for recording {short}: caller: 2.4 s" in note_body(s, call_id)


def queued(world: World) -> tuple[int, dt.datetime]:
    """An interrupted call's recording, swept into a job now; its id and that moment."""
    rec, t = recent_recording(world, "interrupted"), utcnow()
    with world.sessions.begin() as session:
        jobs.sweep(session, after_only=False, now=t)
    return rec, t


def test_a_failing_job_backs_off_and_is_kept_after_three_failures(world: World) -> None:
    s = world.sessions
    rec, t = queued(world)
    for attempt, wait in ((1, 30.0), (2, 60.0), (3, None)):
        with s.begin() as session:
            job = jobs.claim(session, "t0", now=t)
            assert job is not None and job.state == jobs.RUNNING and job.attempts == attempt
            assert jobs.claim(session, "t1", now=t) is None  # running under a live lease
            jobs.fail(session, job, f"bad FLAC #{attempt}", now=t)
        job = job_of(s, rec)
        if wait is None:
            break
        assert job.state == jobs.PENDING and job.last_error == f"bad FLAC #{attempt}"
        assert job.next_attempt_at == t + dt.timedelta(seconds=wait)
        with s.begin() as session:  # not before its backoff
            assert jobs.claim(session, "t0", now=t + dt.timedelta(seconds=wait - 1)) is None
        t += dt.timedelta(seconds=wait)
        assert f"retrying after: bad FLAC #{attempt}" in note_body(s, job.call_id)
    assert job.state == jobs.FAILED and job.attempts == 3 and job.last_error == "bad FLAC #3"
    with s.begin() as session:
        assert jobs.claim(session, "t0", now=t + dt.timedelta(days=1)) is None
        stats = jobs.backlog_stats(session)
    assert stats["failed"] == 1 and stats["pending"] == 0
    body = note_body(s, job.call_id)
    failed = f"Transcript of recording {rec} incomplete: after-call transcription failed 3 times"
    assert failed in body
    assert body.count("Transcript") == 1, body  # the line was replaced, never added twice


def test_a_dead_runners_job_goes_back_to_its_successor_or_after_the_lease(world: World) -> None:
    s = world.sessions
    rec, t = queued(world)
    with s.begin() as session:
        assert jobs.claim(session, "t0", now=t) is not None
    with s.begin() as session:  # t0 was killed: t1 waits for the lease, t0's successor not
        assert jobs.claim(session, "t1", now=t) is None
        again = jobs.claim(session, "t0", now=t)
        assert again is not None and again.attempts == 2
    later = t + dt.timedelta(seconds=jobs.LEASE_S + 1)
    with s.begin() as session:
        taken = jobs.claim(session, "t1", now=later)
        assert taken is not None and taken.attempts == 3 and taken.claimed_by == "t1"
    with s.begin() as session:  # it died during every attempt: kept as failed, with that
        assert jobs.claim(session, "t1", now=later) is None
    job = job_of(s, rec)
    assert job.state == jobs.FAILED and "died during each attempt" in (job.last_error or "")
    with s.begin() as session:  # a runner stopped by SIGTERM gives back an untried job
        other = recent_recording(world, "interrupted")
        jobs.sweep(session, after_only=False, now=t)
    with s.begin() as session:
        job = jobs.claim(session, "t0", now=t)
        assert job is not None and job.recording_id == other
        jobs.release(session, job)
    assert job_of(s, other).state == jobs.PENDING and job_of(s, other).attempts == 0


def test_done_jobs_give_the_real_time_factor_and_the_oldest_wait(world: World) -> None:
    s = world.sessions
    t = utcnow()
    first, second = recent_recording(world, "interrupted"), recent_recording(world, "interrupted")
    with s.begin() as session:
        jobs.sweep(session, after_only=False, now=t - dt.timedelta(seconds=50))
        stats = jobs.backlog_stats(session, now=t)
    assert stats == {"pending": 2, "oldest_pending_s": 50.0, "failed": 0, "rtf": None}
    with s.begin() as session:
        job = jobs.claim(session, "t0", now=t)
        assert job is not None and job.recording_id == first
        jobs.finish(session, job, audio_s=40.0, work_s=10.0, utterances=3)
        stats = jobs.backlog_stats(session)
    assert stats["pending"] == 1 and stats["rtf"] == 0.25
    assert "Transcript of recording" in note_body(s, job.call_id)
    assert "3 utterance(s), after-call transcription" in note_body(s, job.call_id)
    assert job_of(s, second).state == jobs.PENDING


@pytest.fixture
def pg_world(postgres_url: str, tmp_path: Path) -> Iterator[World]:
    yield from build_world(postgres_url, tmp_path / "recordings")


def test_two_runners_on_postgresql_never_take_the_same_job(
    pg_world: World, postgres_url: str
) -> None:
    world = pg_world
    recordings = [recent_recording(world, "interrupted") for _ in range(30)]
    with world.sessions.begin() as session:
        jobs.sweep(session, after_only=False)
    # One runner holds its claim's transaction open: SKIP LOCKED hands the other the next.
    engine = create_engine(postgres_url)
    other = make_sessions(engine)
    with world.sessions.begin() as a, other.begin() as b:
        first = jobs.claim(a, "t0")
        second = jobs.claim(b, "t1")
        assert first is not None and second is not None
        assert first.id != second.id
        jobs.finish(a, first, audio_s=1.0, work_s=0.1, utterances=0)
        jobs.finish(b, second, audio_s=1.0, work_s=0.1, utterances=0)
    taken: dict[str, list[int]] = {"t0": [], "t1": []}
    barrier = threading.Barrier(2)

    def runner(name: str) -> None:
        barrier.wait()
        for _ in range(40):
            with other.begin() as session:
                job = jobs.claim(session, name)
                if job is None:
                    return
                taken[name].append(job.recording_id)
                jobs.finish(session, job, audio_s=1.0, work_s=0.1, utterances=0)

    threads = [threading.Thread(target=runner, args=(n,)) for n in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    both = taken["t0"] + taken["t1"]
    assert len(both) == len(set(both)) == len(recordings) - 2, taken
    engine.dispose()


@pytest.mark.parametrize(
    ("asr", "url", "names"),
    [
        ({"model": "/m", "transcribers": 3}, "sqlite:///x.db", ["t0"]),  # one writer: one runner
        ({"model": "/m", "transcribers": 3}, "postgresql+psycopg://u@h/db", ["t0", "t1", "t2"]),
        ({"model": "/m", "transcribers": 0}, "postgresql+psycopg://u@h/db", []),
        ({"model": "/m", "transcribe": "live", "transcribers": 3}, "sqlite:///x.db", []),
        ({"model": "", "transcribers": 3}, "sqlite:///x.db", []),  # nothing to transcribe with
        ({"model": "/m", "transcribe": "after"}, "sqlite:///x.db", ["t0"]),  # -1: cores - 1, >= 1
    ],
)
def test_how_many_transcription_processes_serve_runs(
    asr: dict[str, Any], url: str, names: list[str]
) -> None:
    cfg = config.from_mapping({"asr": asr, "database": {"url": url}})
    assert transcriber_names(cfg) == names


@pytest.mark.parametrize("value", ["both", "", "Live"])
def test_asr_transcribe_takes_one_of_its_modes(value: str) -> None:
    with pytest.raises(config.ConfigError, match="asr.transcribe: one of 'live\\+after'"):
        config.from_mapping({"asr": {"transcribe": value}})


def test_the_crm_gets_the_transcript_once_the_calls_last_job_lands(world: World) -> None:
    # A call with two recordings (its IVR part and a bridged part): one live transcript whole,
    # the other's job still to run. Telling the CRM at hang-up would send a partial transcript
    # and then the whole one again; only the last job to land owes it.
    s = world.sessions
    whole = recent_recording(world, ago=1)
    with s.begin() as session:
        rec = session.get(Recording, whole)
        assert rec is not None
        call_id = rec.call_id
    short = world.recording(call_id, started_at=utcnow(), status="final")
    with s.begin() as session:
        said = {"speaker": "caller", "text": "마지막 결제", "start_s": 1.0, "end_s": 2.0}
        session.add(Transcript(call_id=call_id, recording_id=whole, source="live", **said))
        jobs.mark_live(session, whole, True)
        jobs.mark_live(session, short, False, "agent: 3.0 s of audio dropped")
    with s.begin() as session:
        assert owe_transcript(session, call_id) is False  # the hang-up's: a job is to come
    with s.begin() as session:
        job = jobs.claim(session, "t0")
        assert job is not None and job.recording_id == short
        job_call = job.call_id
        assert owe_transcript(session, job_call) is False  # running: still to land
        jobs.finish(session, job, 3.0, 1.0, 1)
        assert owe_transcript(session, job_call) is True  # landed: the whole transcript
    with s() as session:
        owed = session.scalars(
            select(WebhookOutbox.event).where(WebhookOutbox.event == TRANSCRIPT_EVENT)
        ).all()
    assert owed == [TRANSCRIPT_EVENT]
