"""Live transcripts over real SIP: how many concurrent speaking calls this machine transcribes
live, as they happen, without falling behind (issue 15, bench (a)).

A real `voice serve` fleet behind Kamailio (`--workers`, default 4: 16 call slots), the Korean
model, spoken menus off (the caller's transcript stream is what is measured), no transcription
process (a call whose live transcript fell short keeps its after-call job `pending`, so it can
be counted). The scripted pjsua2 UAs (niced ahead of the server: a customer's phone is not on
our machine) place N calls, started 0.6 s apart, each saying a Korean sentence three times
over the menu prompt (3.8 s of speech, 1 s of quiet after each).
For each N, from the server itself:

- lag: `voice_asr_lag_seconds{mode="transcript"}` (/metrics), each utterance's result after the
  audio that ended it reached the recogniser: p95 (a bucket bound) and mean;
- audio dropped: `voice_asr_dropped_audio_seconds` (a recogniser's queue full);
- whole live transcripts: the calls whose job is `live` (nothing dropped, every stream
  finished) against those left `pending` with their reason;
- utterances stored for the caller per call (3 said).

N rises until the p95 lag reaches 1 s or audio is dropped. Prints numbers; asserts nothing.
Usage: python bench/asr_sip.py [--levels 2,3,4,5,6,8,10,12] [--workers 4]
(ASR_SIP_BUCKETS=1 also prints each level's lag histogram).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402

from accounts.models import Recording, Transcript  # noqa: E402
from accounts.transcription import TranscriptionJob  # noqa: E402
from tests.asr_audio import concat, espeak, silence  # noqa: E402
from tests.integration.conftest import (  # noqa: E402
    Server,
    scrape,
    start_server,
    start_ua,
    stop_server,
    wait_for,
    write_wav,
)
from tests.integration.fleet import fleet_env  # noqa: E402
from tests.integration.test_after_transcripts import KNOWN, MODEL  # noqa: E402

# `say` returns at once: each wait is the sentence and a second of quiet after it.
TALK = "audio;wait:2;say:{wav};wait:{gap};say:{wav};wait:{gap};say:{wav};wait:{gap};hangup"
LAG = "voice_asr_lag_seconds"
# One scripted UA process per call, started STAGGER_S apart: callers who all stop talking in
# the same 20 ms make every recogniser finish at once (measured: p95 1.5 s at 4 such calls).
PER_UA = 1
STAGGER_S = 0.6


def sentence_wav(folder: Path) -> tuple[Path, float]:
    """The sentence each caller says three times, and its length (s)."""
    pcm = concat(silence(0.2), espeak("오늘 날씨가 좋네요 주소를 변경하고 싶어요", speed=170))
    return write_wav(folder / "talk.wav", pcm), len(pcm) / 16000


def lag_buckets(metrics: dict[str, float]) -> dict[float, float]:
    out = {}
    for key, value in metrics.items():
        if key.startswith(f"{LAG}_bucket{{") and 'mode="transcript"' in key:
            bound = key.split('le="')[1].split('"')[0]
            out[float("inf") if bound == "+Inf" else float(bound)] = value
    return out


def p95_bound(before: dict[float, float], after: dict[float, float]) -> tuple[float, int]:
    """(upper bound of the 95th percentile, observations) between two scrapes."""
    delta = {b: after[b] - before.get(b, 0.0) for b in sorted(after)}
    if os.environ.get("ASR_SIP_BUCKETS"):
        print("  cumulative results by lag bound:", {b: int(n) for b, n in delta.items()})
    total = delta[float("inf")]
    if total <= 0:
        return 0.0, 0
    return next(b for b, n in delta.items() if n >= 0.95 * total), int(total)


def recording_ids(server: Server) -> set[int]:
    # ids, not "above the last one": each worker takes its ids in blocks reserved ahead
    with server.session() as session:
        return set(session.scalars(select(Recording.id).where(Recording.channels == 1)))


def level(server: Server, folder: Path, calls: int, talk: str) -> dict[str, object]:
    old = recording_ids(server)
    before = scrape(server)
    uas, left, n = [], calls, 0
    while left > 0:
        here = min(PER_UA, left)
        uas.append(start_ua(server, talk, folder / f"ua-{calls}-{n}.out", ahead=True,
                            caller=KNOWN, calls=here, timeout=120))  # fmt: skip
        left, n = left - here, n + 1
        time.sleep(STAGGER_S)
    for ua in uas:
        ua.wait(200)

    wait_for(lambda: len(recording_ids(server) - old) >= calls, 30, 0.5)
    new = recording_ids(server) - old
    with server.session() as session:
        call_ids = list(session.scalars(select(Recording.call_id).where(Recording.id.in_(new))))

    def jobs() -> list[TranscriptionJob]:
        with server.session() as session:
            query = select(TranscriptionJob).where(TranscriptionJob.recording_id.in_(new))
            return list(session.scalars(query))

    wait_for(lambda: len(jobs()) >= len(call_ids), 60, 0.5)
    time.sleep(2.0)  # the last utterances go behind the call
    after = scrape(server)
    p95, observed = p95_bound(lag_buckets(before), lag_buckets(after))
    lag_sum = after.get(f'{LAG}_sum{{mode="transcript"}}', 0) - before.get(
        f'{LAG}_sum{{mode="transcript"}}', 0
    )
    dropped_key = "voice_asr_dropped_audio_seconds_total"
    with server.session() as session:
        said = Counter(
            session.scalars(
                select(Transcript.call_id).where(
                    Transcript.call_id.in_(call_ids), Transcript.speaker == "caller"
                )
            )
        )
    states = Counter(j.state for j in jobs())
    reasons = Counter(j.reason for j in jobs() if j.state != "live")
    return {
        "calls": len(call_ids),
        "p95": p95,
        "mean": lag_sum / observed if observed else 0.0,
        "results": observed,
        "dropped_s": after.get(dropped_key, 0) - before.get(dropped_key, 0),
        "whole": states.get("live", 0),
        "reasons": reasons.most_common(3),
        "utterances": sorted(said.get(c, 0) for c in call_ids),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", default="2,3,4,5,6,8,10,12", help="concurrent calls, rising")
    ap.add_argument("--workers", type=int, default=4, help="call workers (4 calls each)")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (1 min) at start")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        wav, length = sentence_wav(folder)
        talk = TALK.format(wav=wav, gap=f"{length + 1.0:.2f}")
        env = {
            **fleet_env(args.workers),
            "VOICE_ASR_MODEL": MODEL,
            "VOICE_ASR_LANGUAGE": "ko",
            "VOICE_ASR_SPOKEN_MENU": "false",
            "VOICE_ASR_TRANSCRIBERS": "0",
            "VOICE_IVR_MENU_TIMEOUT": "60",
        }
        server = start_server(folder / "data", env, ready_timeout=120)
        try:
            # One-off costs in every worker before measuring: its first recogniser touches the
            # shared model's pages (measured: 4 calls on 4 fresh workers, p95 lag 1.5 s).
            level(server, folder, args.workers, talk)
            print("\ncalls  results  lag p95 <=  mean   dropped  whole live  caller utterances")
            for calls in levels:
                got = level(server, folder, calls, talk)
                print(f"{calls:5d}  {got['results']:7d}  {got['p95']:8.2f} s  "
                      f"{got['mean']:4.2f} s  {got['dropped_s']:5.1f} s  "
                      f"{got['whole']:3d}/{got['calls']:<3d}     {got['utterances']}"
                      f"{'  ' + str(got['reasons']) if got['reasons'] else ''}")  # fmt: skip
                if got["p95"] >= 1.0 or got["dropped_s"] > 0:
                    break
        finally:
            stop_server(server)
    print(f"\nwhole run {time.monotonic() - started:.0f} s, "
          f"load average {os.getloadavg()[0]:.1f} at end")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
