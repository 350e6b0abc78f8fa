"""Memory and CPU of a process from /proc (Linux), for health reports and benchmarks.

RSS counts shared pages (the preloaded model, libraries) in every process that maps them, so it
overstates a fleet's total; PSS splits each shared page among its sharers and sums correctly;
USS is what the process alone holds.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Usage:
    rss_kb: int
    pss_kb: int
    uss_kb: int
    cpu_s: float  # user + system time so far

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def usage(pid: int) -> Usage | None:
    """The process's memory and CPU time, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(_kb(line) for line in f if line.rstrip().endswith("kB"))
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Fields after the command name (which may contain spaces) start after the last ')'.
    rest = stat.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return Usage(
        rss_kb=fields.get("Rss", 0),
        pss_kb=fields.get("Pss", 0),
        uss_kb=fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
        cpu_s=(int(rest[11]) + int(rest[12])) / ticks,
    )


def _kb(line: str) -> tuple[str, int]:
    name, value = line.split(":", 1)
    return name.strip(), int(value.split()[0])
