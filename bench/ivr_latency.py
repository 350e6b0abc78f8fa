"""Keypress → first audio of the answer, heard by a real SIP caller; one worker's capacity;
and answer → first menu option with the notices, verification and the default voice.

Starts `voice serve` on 127.0.0.1, then the scripted pjsua2 UA calls in batches of 4 (the
worker's limit): it waits for the menu to end, presses 1 during silence, and times the first
sound of the balance answer. Measured at the caller, so it includes RTP, the caller's jitter
buffer and the 20 ms frame clock on both sides. The greeting and menu are replaced by short
studio recordings (the prompts folder) so that each call reaches the menu quickly.

The menu phase starts another server as shipped (notices on, ivr.verify = postal_code, the
piper voice on a cold cache), and times, at the caller, when the menu starts: once for a caller
who waits for each question, once for one who types the ZIP code ahead (right after the
recording notice). The reference is how long the prompts before the menu take to say.

Prints numbers; asserts nothing about speed.
Usage: python bench/ivr_latency.py [--calls 52] [--menu-calls 3] [--skip-keys]
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

from tests.integration.audio import best_match  # noqa: E402
from tests.integration.conftest import TEST_TTS, run_ua, start_server, stop_server  # noqa: E402
from tests.integration.test_bad_input import invite  # noqa: E402
from voice.config import TtsConfig  # noqa: E402
from voice.ivr.clips import SAMPLE_RATE, ClipLibrary  # noqa: E402

BATCH = 4  # calls one worker holds


def short_prompts(prompts_dir: Path, cache_dir: Path) -> None:
    """Studio-recording overrides: the first second of the greeting and of the menu."""
    clips = ClipLibrary(TEST_TTS, cache_dir, prompts_dir / "unused", "Acme Receivables")
    prompts_dir.mkdir(parents=True, exist_ok=True)
    for key, seconds in (("greeting", 0.6), ("menu", 1.0)):
        pcm = np.asarray(clips.clip(key))[: int(seconds * SAMPLE_RATE)]
        soundfile.write(prompts_dir / f"{key}.wav", pcm, SAMPLE_RATE, subtype="PCM_16")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


SHIPPED = {  # the defaults of config.toml, which the test servers turn off for speed
    "VOICE_IVR_RECORDING_NOTICE": "true",
    "VOICE_IVR_COLLECTOR_DISCLOSURE": "true",
    "VOICE_IVR_VERIFY": "postal_code",
    "VOICE_TTS_ENGINE": "piper",
}
BEFORE_MENU = ["recording_notice", "collector_disclosure", "greeting", "verify_zip_code"]


def time_to_menu(calls: int) -> None:
    """Answer -> first audio of the menu, at the caller, on a server as shipped."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        started = time.monotonic()
        server = start_server(data, extra_env=SHIPPED, ready_timeout=600)
        ready = time.monotonic() - started
        try:
            clips = ClipLibrary(
                TtsConfig(), data / "cache" / "tts", data / "prompts", "Acme Receivables"
            )
            menu = clips.render(["menu"])[:SAMPLE_RATE]  # its first second
            spoken = sum(len(clips.render([key])) for key in BEFORE_MENU) / SAMPLE_RATE
            notice = len(clips.render(["recording_notice"])) / SAMPLE_RATE
            scripts = {
                "waits for each prompt": "audio;silence:1200:60;dtmf:10001;audio;wait:4;hangup",
                "types the ZIP ahead": f"audio;wait:{notice + 0.3:.1f};dtmf:10001;wait:16;hangup",
            }
            first = True
            for label, steps in scripts.items():
                offsets = []
                for i in range(calls):
                    with tempfile.TemporaryDirectory() as rec:
                        [report] = run_ua(server, steps, record=Path(rec) / "h", timeout=90)
                        heard, _ = soundfile.read(str(report["record"]), dtype="int16")
                    score, at = best_match(heard, menu)
                    if report["error"] or score < 0.6:
                        print(f"menu not heard ({label}, call {i}): {report}", file=sys.stderr)
                        continue
                    offsets.append(at / SAMPLE_RATE)
                    if first:
                        first = False
                        print(
                            f"first call, cold cache: server ready after {ready:.1f} s (prompts "
                            f"rendered with {clips.engine}); menu at {offsets[0]:.1f} s"
                        )
                if offsets:
                    print(
                        f"answer -> menu, {label:22s} p50 {statistics.median(offsets):.1f} s  "
                        f"max {max(offsets):.1f} s  ({len(offsets)} calls; the prompts before "
                        f"it take {spoken:.1f} s to say, the recording notice {notice:.1f} s)"
                    )
        finally:
            stop_server(server)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=52)
    ap.add_argument("--time-limit", type=float, default=600.0, help="seconds, whole run")
    ap.add_argument("--menu-calls", type=int, default=3, help="calls per menu scenario")
    ap.add_argument("--skip-keys", action="store_true", help="only the time to the menu")
    args = ap.parse_args()
    time_to_menu(args.menu_calls)
    if args.skip_keys:
        return 0

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
