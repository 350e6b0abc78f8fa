"""The life of a recording row: opened with the call, closed into FLAC, repaired after a crash.

Used by the call worker (open at answer, close when the engine has closed the WAV) and by the
supervisor (repair the recordings of calls a dead worker held, and at start-up).
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

import soundfile
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accounts.models import Call, Note, Recording, utcnow
from recordings.capture import finalise, sha256_of
from recordings.paths import path_for, relative_path
from recordings.retention import retain_until_for
from voice.audio import SAMPLE_RATE  # the conference bridge's: what the recorder writes
from voice.config import Config

log = logging.getLogger(__name__)

DISK_FULL_BYTES = 64 * 1024  # free space below this when a call ends: the disk was full
MISSING_GRACE = 2.0  # seconds a recording may fall short of its call before it is reported


class RecordingBook:
    def __init__(self, sessions: sessionmaker[Session], cfg: Config) -> None:
        self._sessions = sessions
        self._cfg = cfg
        self.root = cfg.recordings_dir

    def open(
        self,
        call_id: int,
        started_at: dt.datetime | None = None,
        *,
        kind: str = "call",
        channels: int = 1,
    ) -> tuple[int, Path]:
        """A new recording row for the call; returns its id and the WAV to record into.

        A call may have several: the whole call (mono, both directions mixed), the part bridged
        to a collector (`channels=2`: customer left, collector right) and a `voicemail`.
        """
        started_at = started_at or utcnow()
        with self._sessions.begin() as session:
            rec = Recording(call_id=call_id, path="pending", status="recording",
                            started_at=started_at,
                            **self._fields(started_at, kind, channels))  # fmt: skip
            session.add(rec)
            session.flush()
            rec.path = relative_path(call_id, rec.id, started_at, "flac")
        return rec.id, self._wav(rec.path)

    def plan(
        self, call_id: int, recording_id: int, started_at: dt.datetime, *, kind: str,
        channels: int
    ) -> tuple[dict[str, object], Path]:  # fmt: skip
        """`open` without the database, for an id reserved ahead (accounts/idblocks.py): the
        row's fields for `CallJournal.open_recording` (JSON: it may wait in a spool) and the
        WAV to record into."""
        fields = self._fields(started_at, kind, channels)
        retain = fields.pop("retain_until")
        fields["retain_until"] = retain.isoformat() if isinstance(retain, dt.datetime) else None
        fields["id"] = recording_id
        fields["path"] = relative_path(call_id, recording_id, started_at, "flac")
        return fields, self._wav(str(fields["path"]))

    def _fields(self, started_at: dt.datetime, kind: str, channels: int) -> dict[str, object]:
        return {
            "kind": kind,
            "format": "flac",
            "sample_rate": SAMPLE_RATE,
            "channels": channels,
            "retain_until": retain_until_for(started_at, self._cfg),
        }

    def _wav(self, rel: str) -> Path:
        final = path_for(rel, self.root)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_suffix(".wav")

    def close(
        self, recording_id: int, *, interrupted: bool = False, call_seconds: float | None = None
    ) -> Recording:
        """Finalise the recording's WAV into FLAC (or keep the WAV) and store hash and losses."""
        with self._sessions() as session:
            rec = session.get(Recording, recording_id)
            if rec is None:
                raise LookupError(f"no recording {recording_id}")
            flac = path_for(rec.path, self.root)
        wav = flac.with_suffix(".wav")
        problems = []
        if wav.exists():
            # Before finalising (the FLAC takes space): was the disk full when the call ended?
            disk_full = shutil.disk_usage(wav.parent).free < DISK_FULL_BYTES
            done = finalise(wav, flac)
            if done.problem:
                problems.append(done.problem)
            rel = rec.path if done.path == flac else rec.path[: -len("flac")] + "wav"
            values = {
                "path": rel,
                "format": done.format,
                "duration_s": done.duration_s,
                "bytes": done.bytes,
                "sha256": done.sha256,
            }
            lost = (call_seconds or 0.0) - done.duration_s
            if disk_full and lost > 1.0:
                problems.append(
                    f"recording stopped at {done.duration_s:.1f} s of {call_seconds:.1f} s "
                    f"({lost:.1f} s not recorded: the disk was full)"
                )
            elif call_seconds and lost > max(MISSING_GRACE, 0.1 * call_seconds):
                # A starved media clock skips frames: audio is missing, the disk is not to blame.
                problems.append(
                    f"recording is {lost:.1f} s shorter than the {call_seconds:.1f} s call "
                    "(audio not recorded: the media clock fell behind)"
                )
        elif flac.exists() and rec.sha256 is None:
            # A close tried again (the database refused to store the first one's row): the
            # first made the FLAC and removed the WAV. Describe it, or the row would say no
            # audio was recorded while the whole call is on disk.
            info = soundfile.info(str(flac))
            values = {
                "path": rec.path,
                "format": "flac",
                "duration_s": info.frames / info.samplerate,
                "bytes": flac.stat().st_size,
                "sha256": sha256_of(flac),
            }
        else:
            values = {"duration_s": 0.0}
            problems.append("no audio was written (the recorder never started)")
        with self._sessions.begin() as session:
            rec = session.get(Recording, recording_id)
            assert rec is not None
            for key, value in values.items():
                setattr(rec, key, value)
            rec.status = "interrupted" if interrupted else "final"
            rec.finalized_at = utcnow()
            rec.loss = "; ".join(problems) or None
            _annotate_note(session, rec)
        return rec

    def annotate(self, call_id: int) -> None:
        """Add the lines of the call's recordings finalised before its note was written (a
        bridged part closes when the agent call ends, before the IVR files the note)."""
        with self._sessions.begin() as session:
            rows = session.scalars(
                select(Recording)
                .where(Recording.call_id == call_id, Recording.status != "recording")
                .order_by(Recording.id)
            )
            for rec in rows:
                _annotate_note(session, rec)

    def mark_pause(self, recording_id: int, at_s: float, paused: bool) -> None:
        """Record a PCI gap: a pause opens one, a resume closes the open one."""
        with self._sessions.begin() as session:
            rec = session.get(Recording, recording_id)
            if rec is None:
                raise LookupError(f"no recording {recording_id}")
            pauses = [dict(p) for p in rec.pauses or []]
            if paused and not (pauses and "end" not in pauses[-1]):
                pauses.append({"start": at_s})
            elif not paused and pauses and "end" not in pauses[-1]:
                pauses[-1]["end"] = at_s
            rec.pauses = pauses  # a new list: JSON columns only notice reassignment

    def repair_calls(self, call_ids: list[int]) -> list[Recording]:
        """Close, as interrupted, the recordings still open on these (interrupted) calls."""
        with self._sessions() as session:
            open_ids = list(
                session.scalars(
                    select(Recording.id).where(
                        Recording.call_id.in_(call_ids), Recording.status == "recording"
                    )
                )
            )
        repaired = []
        for recording_id in open_ids:
            try:
                repaired.append(self.close(recording_id, interrupted=True))
            except Exception:
                log.exception("recording %d could not be repaired", recording_id)
        return repaired

    def repair_orphans(self) -> list[Recording]:
        """Start-up: recordings still open whose call is no longer in progress."""
        with self._sessions() as session:
            call_ids = list(
                session.scalars(
                    select(Recording.call_id)
                    .join(Call, Call.id == Recording.call_id)
                    .where(Recording.status == "recording", Call.status != "in_progress")
                )
            )
        return self.repair_calls(call_ids)


def recording_line(rec: Recording) -> str:
    what = {1: "", 2: ", 2 channels (customer left, collector right)"}.get(rec.channels, "")
    line = (
        f"Recording {rec.id}: {rec.duration_s or 0:.1f} s, {rec.format.upper()}{what}, {rec.status}"
    )
    if rec.sha256:
        line += f", SHA-256 {rec.sha256[:16]}…"
    if rec.loss:
        line += f". Incomplete: {rec.loss}"
    return line + "."


def _annotate_note(session: Session, rec: Recording) -> None:
    """Add the recording's line to the call's note (written at hang-up, before the file closed);
    a voicemail's to its voicemail note."""
    note_kind = "voicemail" if rec.kind == "voicemail" else "call"
    note = session.scalars(
        select(Note).where(Note.call_id == rec.call_id, Note.kind == note_kind).order_by(Note.id)
    ).first()
    if note is not None and f"Recording {rec.id}:" not in note.body:
        note.body = f"{note.body}\n{recording_line(rec)}"
