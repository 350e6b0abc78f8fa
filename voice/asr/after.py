"""After-call transcription: a call recording transcribed from its lossless file (issue 15).

A transcription process (`voice serve` forks `asr.transcribers` of them from the zygote, so the
Vosk model is shared) loops: `sweep` finished recordings into jobs, `claim` one
(accounts/transcription.py), transcribe it, store it, repeat; idle, it polls every POLL_S.

Transcribing a recording reuses the live path: one `CallSpeech` (voice/asr/live.py) whose
`SpeechStream`s get the whole file at once (a queue big enough for all of it), so the
endpointer, Vosk, word timings and noise rejection are the live ones.
- A bridged part (2 channels: customer left, collector right) is two streams, "caller" and
  "agent", each hearing only its own channel.
- The whole-call recording is mono, the caller and the IVR mixed. The IVR's side is already
  stored as the text it rendered ("rendered" rows, with times), so those spans are silenced
  before recognition (that is most of an inbound call's audio), except each prompt's last
  BARGE_IN_S: the caller's voice cuts a prompt within that, and what they said over its end is
  kept. An utterance lying wholly inside a prompt (its end at most PROMPT_SLACK_S past the
  prompt's) is the IVR's, and dropped. The bridged part's
  time is silenced too: its own job transcribes it channel by channel.

The result completes the recording's transcript: its "live" rows of those speakers that an
"after" utterance overlaps are replaced by it, the others kept (nothing is lost or doubled).
In the same transaction the job is marked done, the note's transcript line updated and the
CRM's `note.transcript` delivery queued.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from accounts import transcription as jobs
from accounts.call_journal import owe_transcript
from accounts.models import Recording, Transcript
from accounts.transcription import TranscriptionJob
from recordings.paths import UnsafePath, open_for_reading, path_for
from voice.asr.live import CallSpeech, Segment
from voice.asr.memory import release_memory
from voice.asr.stream import SpeechStream
from voice.asr.vad import RATES

log = logging.getLogger(__name__)

AFTER = "after"  # a Transcript's source: recognised from the recording after the call
BARGE_IN_S = 1.5  # the end of each prompt is still recognised: the caller may be cutting it
PROMPT_SLACK_S = 0.5
CHUNK_S = 1.0  # audio per feed() (the stream splits it into frames)
POLL_S = 2.0
TRUNCATED_S = 0.5  # audio that decodes this much shorter than recorded: the file is damaged
SPEAKERS = {1: ("caller",), 2: ("caller", "agent")}  # channels -> who is on each


class JobError(Exception):
    """This recording cannot be transcribed now; the message is the job's `last_error`."""


@dataclass(frozen=True)
class Audio:
    tracks: dict[str, np.ndarray]  # speaker -> int16 samples
    rate: int
    prompts: tuple[tuple[float, float], ...]  # the IVR's rendered spans (mono only)

    @property
    def seconds(self) -> float:
        return max(len(t) for t in self.tracks.values()) / self.rate


def load_audio(session: Session, recording_id: int, root: Any) -> Audio:
    """The recording's channels, checked against its SHA-256, with the IVR's time silenced."""
    rec = session.get(Recording, recording_id)
    if rec is None or rec.status not in ("final", "interrupted"):
        raise JobError(f"recording {recording_id} is not a finished recording")
    if rec.channels not in SPEAKERS:
        raise JobError(f"recording {rec.id}: {rec.channels} channels (1 or 2 expected)")
    try:
        path = path_for(rec.path, root)
        with os.fdopen(open_for_reading(path), "rb") as f:
            data = f.read()
    except (OSError, UnsafePath) as exc:
        raise JobError(f"recording {rec.id}: cannot read {rec.path}: {exc}") from None
    actual = hashlib.sha256(data).hexdigest()
    if rec.sha256 and actual != rec.sha256:
        raise JobError(
            f"recording {rec.id}: SHA-256 mismatch (file damaged or truncated: "
            f"{len(data)} bytes, {actual[:16]}… instead of {rec.sha256[:16]}…)"
        )
    try:
        pcm, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise JobError(f"recording {rec.id}: cannot decode {rec.format.upper()}: {exc}") from None
    if rate not in RATES or pcm.shape[1] != rec.channels:
        raise JobError(f"recording {rec.id}: {rate} Hz x {pcm.shape[1]} is not transcribable")
    if rec.duration_s and len(pcm) / rate < rec.duration_s - TRUNCATED_S:
        raise JobError(
            f"recording {rec.id}: truncated: {len(pcm) / rate:.1f} s decoded of the "
            f"{rec.duration_s:.1f} s recorded"
        )
    tracks = {name: pcm[:, i].copy() for i, name in enumerate(SPEAKERS[rec.channels])}
    prompts: tuple[tuple[float, float], ...] = ()
    if rec.channels == 1:
        prompts = _prompt_spans(session, rec)
        _silence(tracks["caller"], rate, _mono_masks(session, rec, prompts))
    return Audio(tracks, rate, prompts)


def _prompt_spans(session: Session, rec: Recording) -> tuple[tuple[float, float], ...]:
    rows = session.execute(
        select(Transcript.start_s, Transcript.end_s).where(
            Transcript.recording_id == rec.id, Transcript.source == "rendered"
        )
    ).all()
    return tuple((s, e) for s, e in rows if s is not None and e is not None)


def _mono_masks(
    session: Session, rec: Recording, prompts: tuple[tuple[float, float], ...]
) -> list[tuple[float, float]]:
    masks = [(start, end - BARGE_IN_S) for start, end in prompts]
    bridged = session.scalars(
        select(Recording).where(
            Recording.call_id == rec.call_id, Recording.channels == 2, Recording.id != rec.id
        )
    )
    for part in bridged:
        offset = (part.started_at - rec.started_at).total_seconds()
        masks.append((offset, offset + (part.duration_s or 0.0)))
    return masks


def _silence(pcm: np.ndarray, rate: int, spans: list[tuple[float, float]]) -> None:
    for start, end in spans:
        a, b = max(0, round(start * rate)), min(len(pcm), round(end * rate))
        if b > a:
            pcm[a:b] = 0


def transcribe(model: Any, audio: Audio, timeout: float | None = None) -> list[Segment]:
    """Every utterance of every track, in time order (the IVR's own dropped)."""
    segments = asyncio.run(_recognise(model, audio, timeout))
    release_memory()  # the recognisers' graphs: give them back between jobs
    return [s for s in segments if not _inside_prompt(s, audio.prompts)]


async def _recognise(model: Any, audio: Audio, timeout: float | None) -> list[Segment]:
    chunk = round(CHUNK_S * audio.rate)
    streams: dict[str, SpeechStream] = {}
    depth = max(len(t) for t in audio.tracks.values()) // chunk + 4

    def stream(*args: Any, **options: Any) -> SpeechStream:
        made = SpeechStream(*args, rate=audio.rate, queue_chunks=depth, **options)
        streams[made.name] = made
        return made

    speech = CallSpeech(
        model,
        asyncio.get_running_loop(),
        speakers=tuple(audio.tracks),
        stream_factory=stream,
        live=False,
    )
    for name, pcm in audio.tracks.items():
        sink = speech.sink(name)
        for at in range(0, len(pcm), chunk):
            sink(pcm[at : at + chunk].tobytes())
    limit = timeout if timeout is not None else max(60.0, 5.0 * audio.seconds)
    try:
        for name, made in streams.items():
            if not await asyncio.to_thread(made.close, limit):
                raise JobError(f"{name}: recognition did not finish within {limit:.0f} s")
            if made.stats().dropped_chunks:  # pragma: no cover - the queue holds the whole file
                raise JobError(f"{name}: audio dropped")
    finally:
        segments = await speech.close()
    return segments


def _overlapped(row: Transcript, segments: list[Segment]) -> bool:
    start, end = row.start_s or 0.0, row.end_s or 0.0
    return any(s.speaker == row.speaker and s.start < end and start < s.end for s in segments)


def _inside_prompt(seg: Segment, prompts: tuple[tuple[float, float], ...]) -> bool:
    # The recording hears a prompt a little after the player sent it, and the endpointer's
    # speech end lags the sound: PROMPT_SLACK_S past a prompt's end is still the prompt.
    return any(a - 0.1 <= seg.start and seg.end <= b + PROMPT_SLACK_S for a, b in prompts)


def land(
    session: Session, job: TranscriptionJob, audio: Audio, segments: list[Segment], work_s: float
) -> None:
    """Complete the recording's transcript: each live row of these speakers that an after-call
    utterance overlaps is replaced by it; one that none overlaps is kept (its words were not
    heard again there, e.g. said over a prompt's silenced part), so nothing is lost or doubled."""
    live = session.scalars(
        select(Transcript).where(
            Transcript.recording_id == job.recording_id,
            Transcript.source == "live",
            Transcript.speaker.in_(tuple(audio.tracks)),
        )
    )
    replaced = [row.id for row in live if _overlapped(row, segments)]
    if replaced:
        session.execute(delete(Transcript).where(Transcript.id.in_(replaced)))
    for seg in segments:
        session.add(
            Transcript(
                call_id=job.call_id,
                recording_id=job.recording_id,
                speaker=seg.speaker,
                text=seg.text,
                start_s=seg.start,
                end_s=seg.end,
                confidence=round(seg.confidence, 3),
                words=list(seg.words),
                source=AFTER,
            )
        )
    session.flush()
    jobs.finish(session, job, audio.seconds, work_s, len(segments))
    owe_transcript(session, job.call_id)


class Stopping(BaseException):
    """SIGTERM reached a transcription process: give the job back and exit."""


class Runner:
    def __init__(
        self, sessions: sessionmaker[Session], model: Any, root: Any, *, name: str,
        after_only: bool, backoff_initial: float = 30.0,
    ) -> None:  # fmt: skip
        self.sessions = sessions
        self.model = model
        self.root = root
        self.name = name
        self.after_only = after_only
        self.backoff_initial = backoff_initial
        self.busy = threading.Event()  # a job is claimed: SIGTERM gives it back

    def sweep(self) -> list[int]:
        with self.sessions.begin() as session:
            return jobs.sweep(session, self.after_only)

    def run_once(self) -> bool:
        """Claim and do one job; False when none was due."""
        with self.sessions.begin() as session:
            job = jobs.claim(session, self.name)
        if job is None:
            return False
        self.busy.set()
        started = time.monotonic()
        try:
            with self.sessions() as session:
                audio = load_audio(session, job.recording_id, self.root)
            segments = transcribe(self.model, audio)
            with self.sessions.begin() as session:
                land(session, session.merge(job), audio, segments, time.monotonic() - started)
            log.info(
                "recording %d transcribed: %d utterance(s), %.1f s of audio in %.1f s",
                job.recording_id, len(segments), audio.seconds, time.monotonic() - started,
            )  # fmt: skip
        except Stopping:
            with self.sessions.begin() as session:
                jobs.release(session, session.merge(job))
            raise
        except Exception as exc:
            error = str(exc) if isinstance(exc, JobError) else f"{type(exc).__name__}: {exc}"
            log.warning("recording %d: transcription failed: %s", job.recording_id, error)
            with self.sessions.begin() as session:
                jobs.fail(session, session.merge(job), error, backoff_initial=self.backoff_initial)
        finally:
            self.busy.clear()
        return True

    def serve(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.sweep()
                while not stop.is_set() and self.run_once():
                    pass
            except Stopping:
                return
            except Exception:  # the database went away: try again later, never die of it
                log.exception("transcriber %s: pass failed", self.name)
            stop.wait(POLL_S)


def run(cfg: Any, name: str, model: Any) -> None:
    """A transcription process (forked by the zygote): serve jobs until SIGTERM."""
    from accounts.db import make_engine, make_sessions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.nice(10)  # live calls first: this work can wait, theirs cannot
    stop = threading.Event()
    if model is None:
        log.error("transcriber %s: no speech model (asr.model): idle", name)
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
        return
    engine = make_engine(cfg.database_url, cfg.database.busy_timeout_ms)
    runner = Runner(
        make_sessions(engine), model, cfg.recordings_dir, name=name,
        after_only=cfg.asr.transcribe == "after", backoff_initial=cfg.asr.after_backoff,
    )  # fmt: skip

    def on_term(*_: Any) -> None:
        stop.set()
        if runner.busy.is_set():
            raise Stopping

    signal.signal(signal.SIGTERM, on_term)
    log.info("transcriber %s ready", name)
    runner.serve(stop)
    engine.dispose()


def transcriber_names(cfg: Any) -> list[str]:
    """The transcription processes `voice serve` runs: `asr.transcribers` of them (one on
    SQLite, whose single writer lock makes more pointless), none without a model."""
    from sqlalchemy.engine import make_url

    count = cfg.asr.resolved_transcribers() if cfg.asr.model else 0
    if make_url(cfg.database_url).get_backend_name() == "sqlite":
        count = min(count, 1)
    return [f"t{i}" for i in range(count)]
