"""/metrics text from a health report: sums over workers, refusals by code, valid format."""

from __future__ import annotations

import re

from voice.metrics import render


def worker(name: str, counters: dict[str, int] | None, ready: bool = True) -> dict[str, object]:
    return {
        "name": name,
        "ready": ready,
        "restarts": 1 if name == "w1" else 0,
        "counters": counters,
        "memory_kb": {"rss_kb": 9, "pss_kb": 100, "uss_kb": 5, "cpu_s": 1.5} if ready else None,
    }


def test_counters_are_summed_over_workers_and_refusals_labelled_by_code() -> None:
    health = {
        "status": "degraded",
        "workers": [
            worker("w0", {"calls_answered": 3, "calls_refused_486": 2, "recordings_total": 3}),
            worker("w1", {"calls_answered": 4, "calls_refused_503": 1, "calls_refused_486": 1}),
            worker("w2", None, ready=False),
        ],
        "capacity": {"calls": 2, "max_calls": 8},
        "memory_total_pss_kb": 1000,
    }
    text = render(health)
    assert "\nvoice_up 0\n" in text
    assert 'voice_workers{state="ready"} 2\nvoice_workers{state="down"} 1\n' in text
    assert "\nvoice_calls_answered_total 7\n" in text
    assert 'voice_calls_refused_total{code="486"} 3\n' in text
    assert 'voice_calls_refused_total{code="503"} 1\n' in text
    assert 'voice_worker_restarts_total{worker="w1"} 1\n' in text
    assert 'voice_worker_pss_bytes{worker="w0"} 102400\n' in text
    assert "\nvoice_memory_pss_bytes 1.024e+06\n" in text
    assert "\nvoice_recordings_incomplete_total 0\n" in text
    sample = re.compile(r'[a-z_]+(\{[a-z]+="[^"]*"\})? [0-9.e+-]+')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.fullmatch(line), line
