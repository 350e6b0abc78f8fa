"""Keypress → first audio of the answer, heard by a real SIP caller; and one worker's capacity.

Starts `voice serve` on 127.0.0.1, then the scripted pjsua2 UA calls in batches of 4 (the
worker's limit): it waits for the menu to end, presses 1 during silence, and times the first
sound of the balance answer. Measured at the caller, so it includes RTP, the caller's jitter
buffer and the 20 ms frame clock on both sides. The greeting and menu are replaced by short
studio recordings (the prompts folder) so that each call reaches the menu quickly.

Prints numbers; asserts nothing about speed. Usage: python bench/ivr_latency.py [--calls 52]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.conftest import run_ua, start_server, stop_server  # noqa: E402
from tests.integration.test_bad_input import invite  # noqa: E402
from voice.config import TtsConfig  # noqa: E402
from voice.ivr.clips import SAMPLE_RATE, ClipLibrary  # noqa: E402

BATCH = 4  # calls one worker holds


def short_prompts(prompts_dir: Path, cache_dir: Path) -> None:
    """Studio-recording overrides: the first second of the greeting and of the menu."""
    clips = ClipLibrary(TtsConfig(), cache_dir, prompts_dir / "unused", "Acme Receivables")
    prompts_dir.mkdir(parents=True, exist_ok=True)
    for key, seconds in (("greeting", 0.6), ("menu", 1.0)):
        pcm = np.asarray(clips.clip(key))[: int(seconds * SAMPLE_RATE)]
        soundfile.write(prompts_dir / f"{key}.wav", pcm, SAMPLE_RATE, subtype="PCM_16")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=52)
    ap.add_argument("--time-limit", type=float, default=600.0, help="seconds, whole run")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        short_prompts(data / "prompts", data / "cache" / "tts")
        server = start_server(data)
        try:
            latencies: list[float] = []
            failures = 0
            started = time.monotonic()
            while len(latencies) + failures < args.calls:
                if time.monotonic() - started > args.time_limit:
                    print("time limit reached", file=sys.stderr)
                    break
                batch = min(BATCH, args.calls - len(latencies) - failures)
                reports = run_ua(
                    server,
                    "audio;silence:600;dtmf:1;audio:5;wait:0.3;hangup",
                    calls=batch,
                    timeout=40,
                )
                for report in reports:
                    if report["error"] or report["code"] != 200 or not report["latencies_ms"]:
                        failures += 1
                        print(f"failed call: {report}", file=sys.stderr)
                    else:
                        latencies.extend(report["latencies_ms"])
            elapsed = time.monotonic() - started

            # Capacity: 4 calls held at once, then one more.
            import subprocess

            from tests.integration.conftest import ua_command

            held = subprocess.Popen(
                ua_command(
                    server,
                    "audio;dtmf:1;audio;wait:3;hangup",
                    calls=4,
                    timeout=30,
                    rtp_port=34000,
                ),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.5)
            fifth = invite(server.sip_port)
            out, _ = held.communicate(timeout=60)
            carried = sum(
                '"code": 200' in line and '"error": ""' in line
                for line in out.decode().splitlines()
            )
        finally:
            stop_server(server)

    print(f"calls measured            {len(latencies)} ok, {failures} failed, {elapsed:.1f} s")
    if latencies:
        print(
            f"keypress -> answer audio  p50 {statistics.median(latencies):.1f} ms   "
            f"p95 {percentile(latencies, 95):.1f} ms   max {max(latencies):.1f} ms"
        )
    print(
        f"concurrent calls carried  {carried} of 4 held at once; 5th call got {fifth[0]} {fifth[1]}"
    )
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
