"""`/metrics` in the Prometheus text format, built from the supervisor's health report.

Counters come from the workers' own counters (summed over the fleet, so a restarted worker's
counters restart too: Prometheus' `rate()` handles resets). Names follow Prometheus conventions.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

# Worker counter -> (metric name, help). Refusals carry the SIP code as a label.
COUNTERS = {
    "calls_answered": ("voice_calls_answered_total", "Calls answered by the workers."),
    "calls_placed": ("voice_calls_placed_total", "Calls placed by the workers."),
    "recordings_total": ("voice_recordings_total", "Recordings finalised."),
    "recordings_incomplete_total": (
        "voice_recordings_incomplete_total",
        "Recordings that lost audio (disk full or unwritable).",
    ),
    "recordings_failed_total": (
        "voice_recordings_failed_total",
        "Recordings that could not be finalised.",
    ),
}
_REFUSED = re.compile(r"calls_refused_(\d{3})")


def render(health: dict[str, Any]) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    workers = health["workers"]
    totals: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    for worker in workers:
        for key, value in (worker.get("counters") or {}).items():
            if match := _REFUSED.fullmatch(key):
                refused[match.group(1)] += value
            else:
                totals[key] += value
    metric(
        "voice_up",
        "gauge",
        "1 when every worker and Kamailio are ready.",
        [("", 1.0 if health["status"] == "ok" else 0.0)],
    )
    metric(
        "voice_workers",
        "gauge",
        "Call workers by state.",
        [
            ('{state="ready"}', sum(1 for w in workers if w["ready"])),
            ('{state="down"}', sum(1 for w in workers if not w["ready"])),
        ],
    )
    metric("voice_calls_active", "gauge", "Calls in progress.", [("", health["capacity"]["calls"])])
    metric(
        "voice_call_capacity",
        "gauge",
        "Call slots of the ready workers.",
        [("", health["capacity"]["max_calls"])],
    )
    metric(
        "voice_worker_restarts_total",
        "counter",
        "Worker restarts after a crash.",
        [(f'{{worker="{w["name"]}"}}', w["restarts"]) for w in workers],
    )
    for key, (name, help_text) in COUNTERS.items():
        metric(name, "counter", help_text, [("", totals.get(key, 0))])
    metric(
        "voice_calls_refused_total",
        "counter",
        "Calls refused, by SIP status.",
        [(f'{{code="{code}"}}', n) for code, n in sorted(refused.items())],
    )
    memory = [(w["name"], w["memory_kb"]) for w in workers if w["memory_kb"]]
    metric(
        "voice_worker_pss_bytes",
        "gauge",
        "Proportional set size of each worker.",
        [(f'{{worker="{n}"}}', m["pss_kb"] * 1024) for n, m in memory],
    )
    metric(
        "voice_worker_cpu_seconds_total",
        "counter",
        "CPU time of each worker.",
        [(f'{{worker="{n}"}}', m["cpu_s"]) for n, m in memory],
    )
    metric(
        "voice_memory_pss_bytes",
        "gauge",
        "Proportional set size of the whole server.",
        [("", health["memory_total_pss_kb"] * 1024)],
    )
    return "\n".join(lines) + "\n"
