"""After-call transcription jobs: one row per call recording, saying how its transcript is made.

A recording's row is written once (`recording_id` is unique), by whichever comes first:
- the live path, at the end of the call's live speech (`mark_live`): state "live" when every
  stream stopped in time with no audio dropped (nothing more to do), else a "pending" job with
  what went wrong;
- the sweep (`sweep`, run by the transcription processes): a finished recording that has no row
  (its worker was killed, there was no live recognition, or `asr.transcribe = "after"`) gets a
  "pending" job.

A job is claimed (`claim`: `FOR UPDATE SKIP LOCKED` on PostgreSQL, so runners never take the same
one; SQLite has one runner, and the claim's conditional UPDATE keeps it right even so), then
`finish`ed or `fail`ed. A failure is retried after `backoff` (accounts/webhook.py's doubling), and
the `max_attempts`-th is kept as "failed" with its reason. A runner that dies mid-job leaves it
"running" until its lease ends; its successor (same name) takes it back at once.

The call's note carries the job's line: "Transcript pending: ..." until it lands, then the
result (`note_line`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from accounts.models import Base, Note, Recording, UtcDateTime, utcnow
from accounts.retry import backoff

if TYPE_CHECKING:
    from voice.config import AsrConfig

PENDING, RUNNING, DONE, FAILED, LIVE = "pending", "running", "done", "failed", "live"
MAX_ATTEMPTS = 3
LEASE_S = 1800.0  # a running job whose runner went silent this long is taken by another
LIVE_GRACE_S = 120.0  # a final recording's live path may still be closing its streams
SWEEP_WINDOW = dt.timedelta(days=2)  # older recordings are never queued (no backfill flood)
RTF_WINDOW = dt.timedelta(hours=1)
NOTE_PREFIX = "Transcript"  # every line this module writes on a note starts so


class TranscriptionJob(Base):
    """How one call recording's transcript is made (see the module docstring)."""

    __tablename__ = "transcription_jobs"
    __table_args__ = (Index("ix_transcription_jobs_due", "state", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), index=True)
    recording_id: Mapped[int] = mapped_column(ForeignKey("recordings.id"), unique=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)  # why the job exists (or why none is needed)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), default=utcnow)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    audio_s: Mapped[float | None] = mapped_column(Float)  # seconds of audio transcribed
    work_s: Mapped[float | None] = mapped_column(Float)  # wall seconds it took
    utterances: Mapped[int | None] = mapped_column(Integer)


def enqueue(
    session: Session, recording_id: int, reason: str, now: dt.datetime | None = None
) -> TranscriptionJob | None:
    """A pending job for the recording, unless it already has a row (then None)."""
    return _add(session, recording_id, PENDING, reason, now or utcnow())


def mark_live(
    session: Session, recording_id: int, complete: bool, reason: str = ""
) -> TranscriptionJob | None:
    """The live path's word on a recording: complete (no job), or a job with `reason`."""
    if complete:
        return _add(session, recording_id, LIVE, "live transcript complete", utcnow())
    return enqueue(session, recording_id, reason or "live transcript incomplete")


def _add(
    session: Session, recording_id: int, state: str, reason: str, now: dt.datetime
) -> TranscriptionJob | None:
    rec = session.get(Recording, recording_id)
    if rec is None:
        raise LookupError(f"no recording {recording_id}")
    job = TranscriptionJob(
        call_id=rec.call_id,
        recording_id=recording_id,
        state=state,
        reason=reason[:500],
        attempts=0,
        created_at=now,
        next_attempt_at=now if state == PENDING else None,
    )
    try:
        with session.begin_nested():  # a unique clash rolls back this row only
            session.add(job)
    except IntegrityError:
        return None
    if state == PENDING:
        set_note_line(session, rec.call_id, note_line(job))
    return job


def sweep(session: Session, after_only: bool, now: dt.datetime | None = None) -> list[int]:
    """Queue every finished call recording without a row; returns their recording ids.

    `after_only` (asr.transcribe = "after"): no live transcript is awaited, so no grace.
    Otherwise a final recording waits LIVE_GRACE_S for its live path's `mark_live`; an
    interrupted one (its worker died) never gets one and is queued at once.
    """
    now = now or utcnow()
    grace = now - dt.timedelta(seconds=0 if after_only else LIVE_GRACE_S)
    stmt = (
        select(Recording.id, Recording.status)
        .outerjoin(TranscriptionJob, TranscriptionJob.recording_id == Recording.id)
        .where(
            TranscriptionJob.id.is_(None),
            Recording.kind == "call",
            Recording.status.in_(("final", "interrupted")),
            Recording.duration_s > 0,
            Recording.finalized_at >= now - SWEEP_WINDOW,
            or_(Recording.status == "interrupted", Recording.finalized_at <= grace),
        )
        .order_by(Recording.id)
        .limit(200)
    )
    queued = []
    for recording_id, status in session.execute(stmt).all():
        reason = {
            "interrupted": "call worker stopped during the call (recording repaired)",
        }.get(status, "after-call transcription" if after_only else "no live transcript")
        if enqueue(session, recording_id, reason, now) is not None:
            queued.append(recording_id)
    return queued


def claim(session: Session, runner: str, now: dt.datetime | None = None) -> TranscriptionJob | None:
    """Take the next due job for `runner` (committed by the caller), or None.

    Due: pending and past its backoff, or running under an ended lease, or running under this
    runner's own name (it died and was restarted). Only jobs whose recording is finished.
    """
    now = now or utcnow()
    stmt = (
        select(TranscriptionJob)
        .join(Recording, Recording.id == TranscriptionJob.recording_id)
        .where(
            Recording.status.in_(("final", "interrupted")),
            or_(
                (TranscriptionJob.state == PENDING) & (TranscriptionJob.next_attempt_at <= now),
                (TranscriptionJob.state == RUNNING)
                & or_(TranscriptionJob.lease_until < now, TranscriptionJob.claimed_by == runner),
            ),
        )
        .order_by(TranscriptionJob.next_attempt_at, TranscriptionJob.id)
        .limit(1)
        .with_for_update(skip_locked=True, of=TranscriptionJob)
    )
    job = session.scalars(stmt).first()
    if job is None:
        return None
    if job.state == RUNNING and job.attempts >= MAX_ATTEMPTS:  # it killed its runner each time
        fail(session, job, "the transcription process died during each attempt", now)
        return None
    seen = (job.state, job.attempts)
    taken = session.execute(
        update(TranscriptionJob)
        .where(
            TranscriptionJob.id == job.id,
            TranscriptionJob.state == seen[0],
            TranscriptionJob.attempts == seen[1],
        )
        .values(
            state=RUNNING,
            attempts=seen[1] + 1,
            claimed_by=runner,
            lease_until=now + dt.timedelta(seconds=LEASE_S),
        )
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return None
    session.refresh(job)
    return job


def finish(
    session: Session, job: TranscriptionJob, audio_s: float, work_s: float, utterances: int
) -> None:
    job.state, job.finished_at, job.lease_until = DONE, utcnow(), None
    job.audio_s, job.work_s, job.utterances, job.last_error = audio_s, work_s, utterances, None
    set_note_line(session, job.call_id, note_line(job))


def fail(
    session: Session,
    job: TranscriptionJob,
    error: str,
    now: dt.datetime | None = None,
    backoff_initial: float = 30.0,
    backoff_max: float = 900.0,
) -> None:
    """Retry later, or after the MAX_ATTEMPTS-th failure keep the job as failed."""
    now = now or utcnow()
    job.last_error, job.lease_until = error[:2000], None
    if job.attempts >= MAX_ATTEMPTS:
        job.state, job.finished_at, job.next_attempt_at = FAILED, now, None
    else:
        wait = backoff(job.attempts, backoff_initial, backoff_max)
        job.state, job.next_attempt_at = PENDING, now + dt.timedelta(seconds=wait)
    set_note_line(session, job.call_id, note_line(job))


def release(session: Session, job: TranscriptionJob) -> None:
    """Give a job back untried (its runner is stopping): the attempt does not count."""
    job.state, job.attempts, job.lease_until, job.claimed_by = PENDING, job.attempts - 1, None, None


def note_line(job: TranscriptionJob) -> str:
    if job.state == DONE:
        return (
            f"{NOTE_PREFIX} of recording {job.recording_id}: {job.utterances} utterance(s), "
            f"after-call transcription ({job.reason})."
        )
    if job.state == FAILED:
        return (
            f"{NOTE_PREFIX} of recording {job.recording_id} incomplete: after-call "
            f"transcription failed {job.attempts} times ({job.last_error})."
        )
    retry = f", retrying after: {job.last_error}" if job.last_error else ""
    return f"{NOTE_PREFIX} pending for recording {job.recording_id}: {job.reason}{retry}."


def set_note_line(session: Session, call_id: int, line: str) -> None:
    """Replace the call note's line about this recording's transcript (or add it)."""
    note = session.scalars(
        select(Note).where(Note.call_id == call_id, Note.kind == "call").order_by(Note.id)
    ).first()
    if note is None:
        return
    key = _key(line)
    kept = [
        text
        for text in note.body.split("\n")
        if not (text.startswith(NOTE_PREFIX) and _key(text) == key)
    ]
    note.body = "\n".join([*kept, line])


def _key(line: str) -> str:
    return line.split(":", 1)[0].replace(" incomplete", "").replace(" pending for", " of")


def backlog_stats(session: Session, now: dt.datetime | None = None) -> dict[str, Any]:
    """The after-call queue for /metrics: jobs not landed yet (pending or running), the oldest
    one's age in seconds, failed jobs, and the real-time factor (wall seconds per audio second)
    of the jobs done in the last hour (None without any)."""
    now = now or utcnow()
    waiting = (TranscriptionJob.state == PENDING) | (TranscriptionJob.state == RUNNING)
    pending, oldest = session.execute(
        select(func.count(), func.min(TranscriptionJob.created_at)).where(waiting)
    ).one()
    failed = session.scalar(select(func.count()).where(TranscriptionJob.state == FAILED))
    work, audio = session.execute(
        select(func.sum(TranscriptionJob.work_s), func.sum(TranscriptionJob.audio_s)).where(
            TranscriptionJob.state == DONE, TranscriptionJob.finished_at >= now - RTF_WINDOW
        )
    ).one()
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return {
        "pending": int(pending or 0),
        "oldest_pending_s": round((now - oldest).total_seconds(), 1) if oldest else 0.0,
        "failed": int(failed or 0),
        "rtf": round(work / audio, 4) if work is not None and audio else None,
    }


def live_marker(
    sessions: sessionmaker[Session], recording_id: int | None, asr: AsrConfig
) -> Callable[[str | None], None] | None:
    """`CallSpeech(on_closed=...)` for a call recorded as `recording_id`: records whether its
    live transcript was whole (voice/asr/live.py says why not), so only a call that fell short
    gets a job. Only `asr.transcribe = "live+after"` needs it ("after": every call gets one)."""
    if recording_id is None or asr.transcribe != "live+after":
        return None

    def closed(shortfall: str | None) -> None:
        with sessions.begin() as session:
            mark_live(session, recording_id, shortfall is None, shortfall or "")

    return closed
