"""How long the voices take to render: the whole prompt set on a cold cache, and one spoken
balance (cold: every word rendered; warm: concatenated from the clip cache, as calls do).

piper (the default, in-process) against espeak-ng (the fallback) in the same process, on the
same sentences. Prints numbers; asserts nothing. Usage: python bench/tts.py [--balances 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from accounts.views import Balance  # noqa: E402
from voice.config import TtsConfig  # noqa: E402
from voice.ivr.clips import SAMPLE_RATE, ClipLibrary  # noqa: E402
from voice.ivr.inbound import balance_answer  # noqa: E402


def balances(n: int) -> list[Balance]:
    """Different amounts each time (a fixed seed: runs compare), some with a past-due part."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        open_cents = int(rng.integers(100, 5_000_000))
        past_due = int(rng.integers(0, open_cents)) if rng.random() < 0.7 else 0
        out.append(Balance(open_cents, past_due, "USD"))
    return out


def p95(values: list[float]) -> float:
    return float(np.percentile(np.asarray(values), 95))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--balances", type=int, default=20, help="balances rendered per voice")
    args = ap.parse_args()
    totals: dict[str, float] = {}
    for engine in ("espeak-ng", "piper"):
        with tempfile.TemporaryDirectory() as tmp:
            cache, prompts = Path(tmp) / "cache", Path(tmp) / "prompts"
            lib = ClipLibrary(TtsConfig(engine=engine), cache, prompts, "Acme Receivables")
            if lib.engine != engine:
                print(f"{engine}: not available (rendered by {lib.engine}); skipped")
                continue
            started = time.perf_counter()
            rendered = lib.prewarm()
            totals[engine] = time.perf_counter() - started
            audio_s = sum(len(lib.clip(t)) for t in lib_tokens()) / SAMPLE_RATE
            print(f"{engine:9s} whole prompt set: {rendered} clips in {totals[engine]:.1f} s "
                  f"({audio_s:.0f} s of audio)")  # fmt: skip
            cold, warm = [], []
            for balance in balances(args.balances):
                tokens = balance_answer(balance)[0]
                fresh = ClipLibrary(
                    TtsConfig(engine=engine), Path(tmp) / f"cold{len(cold)}", prompts, "Acme"
                )
                started = time.perf_counter()
                fresh.render(tokens)
                cold.append(time.perf_counter() - started)
                started = time.perf_counter()
                lib.render(tokens)
                warm.append(time.perf_counter() - started)
            ms = [1000 * w for w in warm]
            print(f"{engine:9s} one spoken balance, cold: p50 {statistics.median(cold):.2f} s  "
                  f"p95 {p95(cold):.2f} s;  warm (cached clips): p50 "
                  f"{statistics.median(ms):.1f} ms  p95 {p95(ms):.1f} ms")  # fmt: skip
    if len(totals) == 2:
        print(f"prompt set, piper / espeak-ng: {totals['piper'] / totals['espeak-ng']:.1f}x")
    return 0


def lib_tokens() -> list[str]:
    from voice.ivr import say
    from voice.ivr.prompts import PROMPTS

    return list(PROMPTS) + sorted(say.VOCABULARY)


if __name__ == "__main__":
    sys.exit(main())
