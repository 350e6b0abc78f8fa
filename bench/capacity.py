"""Capacity of the call fleet on this machine: concurrent IVR calls, set-up rate, CPU, memory.

Starts `voice serve` (supervisor, zygote, N call workers behind Kamailio) on free loopback
ports and calls it with sipp. Every call is tests/sipp/fleet_ivr_call.xml: INVITE through
Kamailio, the greeting, key 1 as RFC 2833 (sip-tester's pcap), the balance, a hold, BYE.

1. Concurrency: L calls held together, for L = 40, 80, ... up to the first level with a
   failure. A level passes only if sipp counts L successful calls and no failure, the database
   holds L completed calls that each chose "balance", and no worker died.
2. Set-up rate: short calls (hold 1 s) at rising rates up to the first failure; INVITE -> 200 OK
   times from sipp's per-call response-time trace.
3. Reference: the same caller against sipp's own UAS (tests/sipp/bench_uas.xml answers and
   streams audio as a worker does) behind a Kamailio running the product's config, from the
   fleet's first failing level and rate upwards, doubling; the fleet's limits as ratios of it.
4. CPU and memory of every process under load: /healthz (workers), /proc (Kamailio, sipp).

Prints numbers; asserts nothing. Needs root (sipp sends the RFC 2833 key from a raw socket),
sipp and Kamailio. Other load on the machine skews every figure: "busy before" and the "rest of
machine" column say how much there was.

Usage: python bench/capacity.py [--workers 50] [--quick] [--database postgresql] [--help]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import csv
import datetime as dt
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import func, select  # noqa: E402

from accounts.models import Call, CallEvent  # noqa: E402
from tests.integration.conftest import (  # noqa: E402
    Server,
    free_port,
    free_port_block,
    start_server,
    stop_server,
)
from voice.config import from_mapping  # noqa: E402
from voice.procinfo import Usage, usage  # noqa: E402

SIPP_DIR = REPO / "tests" / "sipp"
CALLER_SCENARIO = SIPP_DIR / "fleet_ivr_call.xml"
UAS_SCENARIO = SIPP_DIR / "bench_uas.xml"
KNOWN = "+12125550101"  # demo account 10042: one match, straight to the menu
SLOTS_PER_WORKER = 4  # the pjsua2 wheel's compiled limit
MIN_RTP_PORTS = 32  # per worker: 4 calls x 2 sockets, freed ~0.5 s after a hang-up; ample
GREETING_S = 1.5  # the caller scenario's pause before its key
# After the balance the menu (12 s with the rendered prompts) times out three times (6 s each)
# and the IVR says goodbye: ~70 s after the key. A caller holding longer is hung up on.
IVR_GIVES_UP_S = 60.0
SETTLE_S = 6.0  # between runs: hung-up calls free their RTP sockets and media ports
SAMPLE_S = 1.0  # /proc sampling interval during a run
MEMORY_EVERY = 5  # samples; reading smaps_rollup of every process costs CPU itself
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MB = 1024.0
MEMORY_KEYS = ("pss_kb", "uss_kb", "rss_kb")


# -- ports and processes ----------------------------------------------------------------------


def group_usage(pgid: int, memory: bool = True) -> tuple[int, float, int]:
    """(processes, CPU seconds, PSS kB) of a process group: Kamailio forks its children."""
    count, cpu, pss = 0, 0.0, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            rest = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[2]) != pgid:
            continue
        count, cpu = count + 1, cpu + (int(rest[11]) + int(rest[12])) / CLOCK_TICKS
        if memory and (use := usage(int(entry.name))) is not None:
            pss += use.pss_kb
    return count, cpu, pss


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total else 0.0


# -- sipp -------------------------------------------------------------------------------------


@dataclass
class SippRun:
    calls: int
    rate: float
    rc: int
    ok: int
    failed: int
    peak: int
    rtd_ms: list[float]
    cpu_s: float  # sipp's own CPU time: it shares the machine with what it measures
    elapsed_s: float
    errors: str
    peer_cpu_s: float = 0.0  # the reference UAS's CPU time over the run

    @property
    def clean(self) -> bool:
        return self.rc == 0 and self.failed == 0 and self.ok == self.calls


def run_caller(
    workdir: Path,
    port: int,
    *,
    calls: int,
    rate: float,
    hold_ms: int,
    time_limit: float,
    scenario: Path = CALLER_SCENARIO,
    local_ip: str = "127.0.0.1",
) -> SippRun:
    """The fleet IVR caller: `calls` calls at `rate`/s, all allowed to overlap (`scenario`:
    another caller script with the same keys, e.g. bench/soak.py's transfer; `local_ip`: the
    loopback address calling, e.g. a trunk's that is not the softphones' 127.0.0.1)."""
    workdir.mkdir(parents=True)
    args = [
        *("sipp", "-sf", str(scenario), "-key", "caller", KNOWN, "-s", "ivr"),
        *("-i", local_ip, "-p", str(free_port()), "-mp", str(free_port_block(4))),
        *("-m", str(calls), "-l", str(calls), "-r", f"{rate:g}", "-d", str(hold_ms)),
        *("-timeout", f"{math.ceil(time_limit)}s", "-timeout_error", "-nostdin"),
        *("-trace_err", "-error_file", "errors.log", "-trace_stat", "-stf", "stat.csv"),
        *("-fd", "1", "-trace_rtt", "-rtt_freq", "1", f"127.0.0.1:{port}"),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    with (workdir / "screen.txt").open("wb") as out:
        try:
            rc = subprocess.run(
                args,
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=time_limit + 30,
                check=False,
            ).returncode
        except subprocess.TimeoutExpired:  # run() has killed it
            rc = -1
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    ok, failed, peak = _sipp_counts(workdir)
    return SippRun(
        calls=calls,
        rate=rate,
        rc=rc,
        ok=ok,
        failed=failed,
        peak=peak,
        rtd_ms=_sipp_rtd(workdir),
        cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        elapsed_s=elapsed,
        errors=_sipp_errors(workdir),
    )


def _sipp_counts(workdir: Path) -> tuple[int, int, int]:
    """(successful, failed, peak concurrent) from sipp's statistics file and final screen."""
    ok = failed = peak = 0
    with contextlib.suppress(FileNotFoundError):
        with (workdir / "stat.csv").open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";"))
        if rows:
            ok = int(rows[-1]["SuccessfulCall(C)"])
            failed = int(rows[-1]["FailedCall(C)"])
            peak = max(int(r["CurrentCall"]) for r in rows)
    screen = (workdir / "screen.txt").read_text(errors="replace")
    peaks = [int(p) for p in re.findall(r"Peak was (\d+) calls", screen)]
    return ok, failed, max([peak, *peaks])


def _sipp_rtd(workdir: Path) -> list[float]:
    """INVITE -> 200 OK of each call, ms (sipp's `rtd` trace; whole milliseconds)."""
    times: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 2 and parts[1].strip():
                times.append(float(parts[1]))
    return times


def _sipp_errors(workdir: Path) -> str:
    try:
        text = (workdir / "errors.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""
    # sipp runs its events together on one line; one per line, the first few kinds counted.
    events = re.findall(r"\d{10}\.\d{6}: ([^\n]*?)(?=\d{4}-\d\d-\d\d\t|\Z)", text, re.S)
    kinds = collections.Counter(
        re.sub(r"call: \S+|\(\d+\)|\d+ trips", "…", e).strip() for e in events
    )
    return "; ".join(f"{n}x {kind[:90]}" for kind, n in kinds.most_common(3))


# -- the fleet, sampled -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pids:
    """The fleet's processes, from /healthz; read from /proc so a loaded server cannot stall it."""

    workers: dict[str, int]
    supervisor: int
    zygote: int | None
    kamailio: int | None


def fleet_pids(server: Server) -> Pids | None:
    try:
        health: dict[str, Any] = server.health()  # type: ignore[assignment]
    except Exception:  # noqa: BLE001 - an overloaded server may not answer in time
        return None
    kamailio = health.get("kamailio") or {}
    return Pids(
        workers={w["name"]: w["pid"] for w in health["workers"] if w["pid"]},
        supervisor=server.proc.pid,
        zygote=health.get("zygote_pid"),
        kamailio=kamailio.get("pid"),
    )


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc/PID/stat alone (cheap, unlike smaps)."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(rest[11]) + int(rest[12])) / CLOCK_TICKS


@dataclass
class Sample:
    at: float  # monotonic, the middle of the reading
    cpu: dict[str, float]  # process name (w0.., supervisor, zygote) -> CPU seconds
    kamailio_cpu: float
    ticks: tuple[int, int]
    memory: dict[str, Usage] | None = None  # every MEMORY_EVERY-th sample: smaps is costly
    kamailio_mem: tuple[int, int] = (0, 0)  # processes, PSS kB (with `memory`)


def take_sample(pids: Pids, memory: bool) -> Sample:
    before = time.monotonic()
    named = {**pids.workers, "supervisor": pids.supervisor}
    if pids.zygote:
        named["zygote"] = pids.zygote
    cpu = {n: c for n, pid in named.items() if (c := cpu_seconds(pid)) is not None}
    kamailio = group_usage(pids.kamailio, memory=False)[1] if pids.kamailio else 0.0
    ticks = machine_ticks()
    mem = {n: u for n, pid in named.items() if (u := usage(pid))} if memory else None
    kamailio_mem = (0, 0)
    if memory and pids.kamailio:
        count, _, pss = group_usage(pids.kamailio)
        kamailio_mem = (count, pss)
    return Sample((before + time.monotonic()) / 2, cpu, kamailio, ticks, mem, kamailio_mem)


class Sampler:
    """Samples the fleet's processes every SAMPLE_S seconds in a thread while a run goes on."""

    def __init__(self, pids: Pids) -> None:
        self.pids = pids
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            self.samples.append(take_sample(self.pids, memory=n % MEMORY_EVERY == 0))
            n += 1
            self._stop.wait(SAMPLE_S)
        self.samples.append(take_sample(self.pids, memory=True))

    def between(self, start: float, end: float) -> Load | None:
        """Usage from the first to the last sample within [start, end] (monotonic seconds);
        memory at its highest sampled point there (or the nearest one)."""
        inside = [s for s in self.samples if start <= s.at <= end]
        if len(inside) < 2:
            return None
        with_memory = [s for s in inside if s.memory] or [
            min((s for s in self.samples if s.memory), key=lambda s: abs(s.at - inside[-1].at))
        ]
        peak = max(with_memory, key=lambda s: sum(u.pss_kb for u in (s.memory or {}).values()))
        return load_between(inside[0], inside[-1], peak)


@dataclass
class Load:
    """What the fleet used between two samples."""

    seconds: float
    worker_cpu: dict[str, float]  # % of one core, per worker
    other_cpu: dict[str, float]  # supervisor, zygote
    kamailio_cpu: float
    machine_busy: float  # % of all cores
    memory: dict[str, Usage]  # process name -> memory (and CPU time) at the sampled peak
    kamailio_procs: int
    kamailio_pss_kb: int

    @property
    def workers_cpu(self) -> float:
        return sum(self.worker_cpu.values())

    @property
    def server_cpu(self) -> float:
        return self.workers_cpu + self.kamailio_cpu + sum(self.other_cpu.values())

    @property
    def worker_mem(self) -> list[Usage]:
        return [u for n, u in self.memory.items() if n not in NOT_WORKERS]

    @property
    def server_pss_kb(self) -> int:
        """What /healthz calls memory_total_pss_kb, plus Kamailio."""
        return sum(u.pss_kb for u in self.memory.values()) + self.kamailio_pss_kb


NOT_WORKERS = ("supervisor", "zygote")


def load_between(a: Sample, b: Sample, memory: Sample) -> Load:
    dt = b.at - a.at
    # A worker restarted in between (a new process) has no comparable counter.
    cpu = {n: 100.0 * (c - a.cpu[n]) / dt for n, c in b.cpu.items() if c >= a.cpu.get(n, math.inf)}
    return Load(
        seconds=dt,
        worker_cpu={n: c for n, c in cpu.items() if n not in NOT_WORKERS},
        other_cpu={n: c for n, c in cpu.items() if n in NOT_WORKERS},
        kamailio_cpu=100.0 * (b.kamailio_cpu - a.kamailio_cpu) / dt,
        machine_busy=busy_percent(a.ticks, b.ticks),
        memory=memory.memory or {},
        kamailio_procs=memory.kamailio_mem[0],
        kamailio_pss_kb=memory.kamailio_mem[1],
    )


# -- what the database saw ---------------------------------------------------------------------


@dataclass
class Journal:
    calls: int = 0
    completed: int = 0
    chose_balance: int = 0
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def summary(self) -> str:
        return ", ".join(f"{n} {s}" for s, n in self.statuses.most_common())


# Calls since a moment, not since an id: each worker takes ids from its own reserved
# block (accounts/idblocks.py), so a later call may have a lower id than an earlier one.
def last_call_id(server: Server) -> dt.datetime:
    """A mark for `journal_since` (and bench/soak_check.py): now."""
    return dt.datetime.now(dt.UTC)


def journal_since(
    server: Server, first: dt.datetime, expected: int, wait_s: float = 20.0
) -> Journal:
    """Calls started since `first`, once none is in progress (or `wait_s` has passed)."""
    deadline = time.monotonic() + wait_s
    while True:
        with server.session() as session:
            rows = session.execute(
                select(Call.id, Call.status, Call.end_reason).where(Call.started_at >= first)
            ).all()
            balance = session.scalar(
                select(func.count(func.distinct(CallEvent.call_id))).where(
                    CallEvent.call_id.in_(select(Call.id).where(Call.started_at >= first)),
                    CallEvent.kind == "choice",
                    CallEvent.detail["option"].as_string() == "balance",
                )
            )
        in_progress = sum(1 for r in rows if r.status == "in_progress")
        if (len(rows) >= expected and not in_progress) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    statuses = collections.Counter(
        r.status if r.status != "failed" else f"failed ({r.end_reason})" for r in rows
    )
    return Journal(
        calls=len(rows),
        completed=statuses["completed"],
        chose_balance=balance or 0,
        statuses=statuses,
    )


# -- one run against the fleet -----------------------------------------------------------------


@dataclass
class FleetRun:
    level: int
    sipp: SippRun
    journal: Journal
    worker_exits: int
    load: Load | None  # while every call was up (held calls), else over the whole run
    log_problems: str
    need_choice: bool  # every call must have chosen "balance" (held calls have the time)

    @property
    def clean(self) -> bool:
        return (
            self.sipp.clean
            and self.journal.calls == self.level
            and self.journal.completed == self.level
            and (self.journal.chose_balance == self.level or not self.need_choice)
            and self.worker_exits == 0
        )


class Fleet:
    def __init__(self, server: Server, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        self._runs = 0
        self._log_offset = 0
        self._kamailio_offset = 0

    def run(
        self, calls: int, rate: float, hold_ms: int, *, need_choice: bool, window: bool
    ) -> FleetRun:
        """`window`: usage while every call is up (last set up to first hung up), else whole run."""
        self._runs += 1
        before = self.settle()
        first = last_call_id(self.server)
        start = time.monotonic()
        with Sampler(before) as sampler:
            sipp = run_caller(
                self.workdir / f"fleet-{self._runs}-{calls}x{rate:g}",
                self.server.sip_port,
                calls=calls,
                rate=rate,
                hold_ms=hold_ms,
                time_limit=calls / rate + GREETING_S + hold_ms / 1000 + 60,
            )
        all_up = (start + calls / rate, start + GREETING_S + hold_ms / 1000)
        return FleetRun(
            level=calls,
            sipp=sipp,
            journal=journal_since(self.server, first, calls),
            worker_exits=_exits(before, fleet_pids(self.server)),
            load=sampler.between(*all_up) if window else sampler.between(start, math.inf),
            log_problems=self._log_problems(),
            need_choice=need_choice,
        )

    def settle(self, timeout: float = 60.0) -> Pids:
        """Wait until no call is up, then a little more (RTP sockets and media ports rest)."""
        deadline = time.monotonic() + timeout
        pids = None
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                health: dict[str, Any] = self.server.health()  # type: ignore[assignment]
                if health["capacity"]["calls"] == 0 and (pids := fleet_pids(self.server)):
                    break
            time.sleep(1.0)
        time.sleep(SETTLE_S)
        return pids or fleet_pids(self.server) or Pids({}, self.server.proc.pid, None, None)

    def idle(self, seconds: float = 10.0) -> Load | None:
        pids = self.settle()
        with Sampler(pids) as sampler:
            time.sleep(seconds)
        return sampler.between(0.0, math.inf)

    def _log_problems(self) -> str:
        """What the server's and Kamailio's logs say went wrong since the last run."""
        text = self.server.log()
        new, self._log_offset = text[self._log_offset :], len(text)
        with contextlib.suppress(FileNotFoundError):
            kamailio = (self.server.data_dir / "run" / "kamailio" / "kamailio.log").read_text()
            new += kamailio[self._kamailio_offset :]
            self._kamailio_offset = len(kamailio)
        found = {
            "database is locked": new.count("database is locked"),
            "worker killed": len(re.findall(r"stopped \(killed by signal \d+\)", new)),
            "Fatal Python error": new.count("Fatal Python error"),
            "call failed": len(re.findall(r"voice\.worker ERROR call \S+ failed", new)),
            "recording incomplete": len(re.findall(r"recording \d+ incomplete", new)),
            "Kamailio: worker too slow, marked inactive": new.count("did not answer in time"),
        }
        return ", ".join(f"{n}x {what}" for what, n in found.items() if n)


def _exits(before: Pids, after: Pids | None) -> int:
    """Workers whose process changed during the run (died and were restarted)."""
    if after is None:
        return 0
    return sum(1 for name, pid in after.workers.items() if before.workers.get(name) != pid)


# -- the reference: sipp's UAS behind Kamailio -------------------------------------------------


@contextlib.contextmanager
def reference_uas(workdir: Path, budget_s: float) -> Iterator[tuple[int, int]]:
    """sipp's UAS behind a Kamailio with the product's config; yields (SIP port, UAS pid)."""
    from voice.routing.kamailio import Kamailio
    from voice.routing.kamailio_config import WorkerAddress

    workdir.mkdir(parents=True)
    (workdir / "bench_silence.ul").write_bytes(b"\xff" * 8000)  # 1 s of mu-law silence
    uas_port, kam_port = free_port(), free_port()
    uas = subprocess.Popen(
        [
            *("sipp", "-sf", str(UAS_SCENARIO), "-aa", "-i", "127.0.0.1"),
            *("-p", str(uas_port), "-mp", str(free_port_block(4)), "-nostdin"),
            *("-timeout", f"{math.ceil(budget_s)}s", "-trace_err", "-error_file", "errors.log"),
        ],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    cfg = from_mapping(
        {"sip": {"bind": "127.0.0.1", "port": kam_port}, "data": {"dir": str(workdir / "data")}}
    )
    front = Kamailio(cfg, [WorkerAddress("uas", "127.0.0.1", uas_port)], workdir / "kamailio")
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(front.start())
        yield kam_port, uas.pid
    finally:
        loop.run_until_complete(front.stop())
        loop.close()
        _end(uas)


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- the plan ----------------------------------------------------------------------------------


@dataclass
class Plan:
    workers: int
    levels: list[int]
    base_rate: float
    hold_ms: int  # of the concurrency levels, after the key
    rates: list[float]
    step_s: float
    short_hold_ms: int
    reference_steps: int  # doublings above the fleet's limit; 0: no reference
    database: str
    time_limit_s: float

    def level_rate(self, level: int) -> float:
        """Fast enough that all `level` calls are up before the first one ends."""
        call_s = GREETING_S + self.hold_ms / 1000
        return max(self.base_rate, math.ceil(level / (0.8 * call_s)))

    def rate_calls(self, rate: float) -> int:
        return max(10, int(rate * self.step_s))

    def level_seconds(self, level: int) -> float:
        return level / self.level_rate(level) + GREETING_S + self.hold_ms / 1000 + 30

    def rate_seconds(self, rate: float) -> float:
        return self.rate_calls(rate) / rate + GREETING_S + self.short_hold_ms / 1000 + 20


def make_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    hold = args.hold_ms or (10000 if quick else 30000)
    return Plan(
        workers=args.workers or (20 if quick else 50),
        levels=[20, 40, 60] if quick else [int(x) for x in args.levels.split(",")],
        base_rate=args.rate,
        hold_ms=min(hold, int((IVR_GIVES_UP_S - GREETING_S) * 1000)),
        rates=[5.0, 10.0, 20.0] if quick else [float(x) for x in args.rates.split(",")],
        step_s=args.step_seconds,
        short_hold_ms=1000,
        reference_steps=0 if args.no_reference else (2 if quick else 4),
        database=args.database,
        time_limit_s=args.time_limit,
    )


@dataclass
class Results:
    started_s: float = 0.0
    busy_before: float = 0.0
    idle: Load | None = None
    idle_after: Load | None = None
    concurrency: list[FleetRun] = field(default_factory=list)
    setup: list[FleetRun] = field(default_factory=list)
    ref_concurrency: list[SippRun] = field(default_factory=list)
    ref_setup: list[SippRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Clock:
    def __init__(self, limit_s: float) -> None:
        self.start = time.monotonic()
        self.limit_s = limit_s

    def allows(self, seconds: float, what: str, out: Results) -> bool:
        if time.monotonic() - self.start + seconds <= self.limit_s:
            return True
        out.notes.append(f"{what} skipped: --time-limit")
        return False


def measure_fleet(plan: Plan, server: Server, workdir: Path, out: Results, clock: Clock) -> None:
    fleet = Fleet(server, workdir)
    out.idle = fleet.idle()
    slots = plan.workers * SLOTS_PER_WORKER
    for level in plan.levels:
        if level > slots:
            out.notes.append(f"level {level} skipped: the fleet has {slots} call slots")
            break
        if not clock.allows(plan.level_seconds(level), f"level {level}", out):
            break
        run = fleet.run(level, plan.level_rate(level), plan.hold_ms, need_choice=True, window=True)
        out.concurrency.append(run)
        progress(f"  fleet {level} concurrent at {run.sipp.rate:g}/s: {describe(run)}")
        if not run.clean:
            break
    for rate in plan.rates:
        if not clock.allows(plan.rate_seconds(rate), f"rate {rate:g}/s", out):
            break
        calls = plan.rate_calls(rate)
        run = fleet.run(calls, rate, plan.short_hold_ms, need_choice=False, window=False)
        out.setup.append(run)
        progress(f"  fleet {run.level} short calls at {rate:g}/s: {describe(run)}")
        if not run.clean:
            break
    out.idle_after = fleet.idle()


def start_point(
    runs: Sequence[FleetRun], value: Callable[[FleetRun], float], default: float
) -> float:
    """The fleet's first failing point, else its last: the reference starts there."""
    chosen = next((r for r in runs if not r.clean), runs[-1] if runs else None)
    return value(chosen) if chosen else default


def measure_reference(plan: Plan, workdir: Path, out: Results, clock: Clock) -> None:
    steps = range(plan.reference_steps)
    level = int(start_point(out.concurrency, lambda r: r.level, plan.levels[0]))
    rate = start_point(out.setup, lambda r: r.sipp.rate, plan.rates[0])
    if not steps:
        return
    with reference_uas(workdir / "reference", clock.limit_s) as (port, uas_pid):
        time.sleep(1.0)  # Kamailio's first OPTIONS probe finds the UAS up
        for calls in (level * 2**k for k in steps):
            run = reference_run(
                plan,
                workdir,
                port,
                uas_pid,
                calls,
                plan.level_rate(calls),
                plan.hold_ms,
                plan.level_seconds(calls),
                out,
                clock,
            )
            if run is None:
                break
            out.ref_concurrency.append(run)
            if not run.clean:
                break
        for r in (rate * 2**k for k in steps):
            run = reference_run(
                plan,
                workdir,
                port,
                uas_pid,
                plan.rate_calls(r),
                r,
                plan.short_hold_ms,
                plan.rate_seconds(r),
                out,
                clock,
            )
            if run is None:
                break
            out.ref_setup.append(run)
            if not run.clean:
                break


def reference_run(
    plan: Plan,
    workdir: Path,
    port: int,
    uas_pid: int,
    calls: int,
    rate: float,
    hold_ms: int,
    seconds: float,
    out: Results,
    clock: Clock,
) -> SippRun | None:
    if not clock.allows(seconds, f"reference {calls} calls at {rate:g}/s", out):
        return None
    before = usage(uas_pid)
    run = run_caller(
        workdir / f"reference-{calls}x{rate:g}-{hold_ms}",
        port,
        calls=calls,
        rate=rate,
        hold_ms=hold_ms,
        time_limit=seconds,
    )
    after = usage(uas_pid)
    if before and after:
        run.peer_cpu_s = after.cpu_s - before.cpu_s
    progress(f"  sipp UAS {calls} calls at {rate:g}/s: {describe_sipp(run)}")
    time.sleep(SETTLE_S)
    return run


# -- report ------------------------------------------------------------------------------------


CONCURRENCY_COLUMNS = (
    "calls | rate /s | sipp ok / failed | peak | completed, chose balance | worker deaths"
    " | fleet CPU % | rest of machine CPU % | INVITE->200 ms p50/p95/max"
)

SETUP_COLUMNS = (
    "rate /s | calls | sipp ok / failed | peak | completed | key answered within the hold"
    " | INVITE->200 ms p50/p95/max | fleet CPU %"
)

REFERENCE_COLUMNS = (
    "run | calls | rate /s | ok / failed | peak | INVITE->200 ms p50/p95/max"
    " | sipp UAS CPU % | sipp caller CPU %"
)

USAGE_COLUMNS = (
    "process | count | CPU each mean / max | CPU total"
    " | PSS each mean / max | PSS total | USS each | RSS each"
)


def describe_sipp(run: SippRun) -> str:
    text = f"{run.ok} ok, {run.failed} failed, peak {run.peak}"
    if run.rc != 0:
        text += f", sipp exit {run.rc}"
    return text + (f" [{run.errors}]" if run.errors and not run.clean else "")


def describe(run: FleetRun) -> str:
    j = run.journal
    text = f"{describe_sipp(run.sipp)}; journal {j.summary or 'no calls'}, "
    text += f"{j.chose_balance} chose balance"
    if run.worker_exits:
        text += f"; {run.worker_exits} worker(s) died"
    if run.log_problems:
        text += f"; log: {run.log_problems}"
    return text + (" -> OK" if run.clean else " -> FAILED")


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def rtd(values: Sequence[float]) -> str:
    """INVITE -> 200 OK, ms: p50 / p95 / max."""
    if not values:
        return "-"
    return f"{pct(values, 50):.0f} / {pct(values, 95):.0f} / {max(values):.0f}"


def table(headers: str, rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table; `headers` separated by " | "."""
    print(f"| {headers} |")
    print("|" + "---|" * len(headers.split(" | ")))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")


def cpu_of(load: Load | None) -> str:
    """Call workers and Kamailio, % of one core."""
    return f"{load.workers_cpu + load.kamailio_cpu:.0f}" if load else "-"


def print_report(plan: Plan, out: Results, elapsed: float) -> None:
    print(
        f"\n# Capacity: {plan.workers} call workers x {SLOTS_PER_WORKER} calls behind Kamailio, "
        f"{os.cpu_count()} cores, database {plan.database}\n"
        f"fleet started in {out.started_s:.1f} s; machine busy {out.busy_before:.0f}% before "
        f"the bench (other load skews every figure); the bench took {elapsed / 60:.1f} min"
    )
    print(f"\n## 1. Concurrent IVR calls (greeting, key 1, balance, held {plan.hold_ms} ms)")
    table(CONCURRENCY_COLUMNS, [concurrency_row(r) for r in out.concurrency])
    top = max((r.level for r in out.concurrency if r.clean), default=0)
    print(f"most concurrent calls with zero failures: {top}")
    print(f"\n## 2. Call set-up rate (short calls: greeting, key 1, {plan.short_hold_ms} ms, BYE)")
    table(SETUP_COLUMNS, [setup_row(r) for r in out.setup])
    top_rate = max((r.sipp.rate for r in out.setup if r.clean), default=0.0)
    print(f"highest set-up rate with zero failures: {top_rate:g} calls/s")
    if out.ref_concurrency or out.ref_setup:
        print_reference(out, top, top_rate)
    print_usage(out)
    for note in out.notes:
        print(f"note: {note}")


def others_of(r: FleetRun) -> str:
    """CPU of all but the server and sipp: kernel (loopback RTP), this script, other users."""
    if r.load is None:
        return "-"
    sipp = 100 * r.sipp.cpu_s / r.sipp.elapsed_s
    busy = r.load.machine_busy * (os.cpu_count() or 1)
    return f"{max(0.0, busy - r.load.server_cpu - sipp):.0f}"


def concurrency_row(r: FleetRun) -> list[object]:
    busy = others_of(r)
    journal = f"{r.journal.completed}, {r.journal.chose_balance}"
    sipp = f"{r.sipp.ok} / {r.sipp.failed}"
    return [r.level, f"{r.sipp.rate:g}", sipp, r.sipp.peak, journal, r.worker_exits,
            cpu_of(r.load), busy, rtd(r.sipp.rtd_ms)]  # fmt: skip


def setup_row(r: FleetRun) -> list[object]:
    sipp = f"{r.sipp.ok} / {r.sipp.failed}"
    return [f"{r.sipp.rate:g}", r.level, sipp, r.sipp.peak, r.journal.completed,
            r.journal.chose_balance, rtd(r.sipp.rtd_ms), cpu_of(r.load)]  # fmt: skip


def print_reference(out: Results, top: int, top_rate: float) -> None:
    print("\n## 3. Reference: the same caller, sipp's UAS behind the same Kamailio config")
    runs = [("concurrent", r) for r in out.ref_concurrency] + [("set-up", r) for r in out.ref_setup]
    table(REFERENCE_COLUMNS, [
        [kind, r.calls, f"{r.rate:g}", f"{r.ok} / {r.failed}", r.peak, rtd(r.rtd_ms),
         f"{100 * r.peer_cpu_s / r.elapsed_s:.0f}", f"{100 * r.cpu_s / r.elapsed_s:.0f}"]
        for kind, r in runs
    ])  # fmt: skip
    ref_top = max((r.calls for r in out.ref_concurrency if r.clean), default=0)
    ref_rate = max((r.rate for r in out.ref_setup if r.clean), default=0.0)
    # A UAS that never failed has a higher ceiling than measured: the ratio is an upper bound.
    for what, fleet, ref, runs_of in (
        ("concurrency", float(top), float(ref_top), out.ref_concurrency),
        ("set-up rate", top_rate, ref_rate, out.ref_setup),
    ):
        if ref:
            bound = "<=" if runs_of[-1].clean else "="
            print(f"{what}: fleet {fleet:g} / sipp UAS {ref:g} {bound} {fleet / ref:.2f}")
    fleet_rtd = [t for r in out.setup if r.clean for t in r.sipp.rtd_ms]
    ref_rtd = [t for r in out.ref_setup if r.clean for t in r.rtd_ms]
    if fleet_rtd and ref_rtd:
        print(
            f"INVITE->200 median over the clean set-up runs: fleet {pct(fleet_rtd, 50):.0f} ms, "
            f"sipp UAS {pct(ref_rtd, 50):.0f} ms"
        )


def worker_row(label: str, load: Load) -> list[object]:
    cpu = list(load.worker_cpu.values()) or [math.nan]
    mem = load.worker_mem
    pss, uss, rss = ([getattr(u, k) / MB for u in mem] or [math.nan] for k in MEMORY_KEYS)
    return [label, len(mem), f"{statistics.mean(cpu):.1f} / {max(cpu):.1f}", f"{sum(cpu):.0f}",
            f"{statistics.mean(pss):.1f} / {max(pss):.1f}", f"{sum(pss):.0f}",
            f"{statistics.mean(uss):.1f}", f"{statistics.mean(rss):.1f}"]  # fmt: skip


def print_usage(out: Results) -> None:
    clean = [r for r in out.concurrency if r.clean and r.load]
    run = clean[-1] if clean else next((r for r in out.concurrency if r.load), None)
    if run is None or run.load is None:
        return
    load, calls = run.load, run.sipp.peak
    print(
        f"\n## 4. CPU and memory: {calls} calls up ({load.seconds:.0f} s while all were up); "
        "CPU in % of one core, memory in MB"
    )
    rows = [worker_row("call worker, calls up", load)]
    if out.idle:
        rows.append(worker_row("call worker, idle at start", out.idle))
    if out.idle_after:
        rows.append(worker_row("call worker, idle after the runs", out.idle_after))
    for name, cpu in load.other_cpu.items():
        pss = load.memory[name].pss_kb / MB if name in load.memory else math.nan
        rows.append([name, 1, f"{cpu:.1f}", f"{cpu:.1f}", f"{pss:.1f}", f"{pss:.1f}", "", ""])
    kamailio_pss = f"{load.kamailio_pss_kb / MB:.1f}"
    rows.append(["Kamailio", load.kamailio_procs, "", f"{load.kamailio_cpu:.1f}", "",
                 kamailio_pss, "", ""])  # fmt: skip
    server_pss = load.server_pss_kb / MB
    rows.append(["whole server", "", "", f"{load.server_cpu:.0f}", "", f"{server_pss:.0f}", "", ""])
    table(USAGE_COLUMNS, rows)
    sipp_cpu = 100 * run.sipp.cpu_s / run.sipp.elapsed_s
    cores = os.cpu_count() or 1
    print(
        f"sipp caller: {sipp_cpu:.0f}% of a core; all {cores} cores {load.machine_busy:.0f}% busy"
    )
    if calls:
        extra = load.workers_cpu - (out.idle.workers_cpu if out.idle else 0.0)
        print(
            f"per call up: {load.workers_cpu / calls:.2f}% of a core in the workers "
            f"({extra / calls:.2f}% above the idle fleet), "
            f"{server_pss / calls:.1f} MB PSS of the whole server"
        )


# -- main --------------------------------------------------------------------------------------


def fleet_env(plan: Plan, database_url: str | None) -> dict[str, str]:
    rtp_ports = MIN_RTP_PORTS * plan.workers
    base = free_port_block(plan.workers + rtp_ports)
    env = {
        "VOICE_WORKERS_COUNT": str(plan.workers),
        "VOICE_WORKERS_SIP_PORT": str(base),
        "VOICE_SIP_RTP_PORT": str(base + plan.workers),
        "VOICE_SIP_RTP_PORT_RANGE": str(rtp_ports),
        "VOICE_WORKERS_RESTART_DELAY": "0.5",
        "VOICE_WORKERS_DRAIN_TIMEOUT": "5",
    }
    if database_url:
        env["VOICE_DATABASE_URL"] = database_url
    return env


def check_tools() -> str | None:
    if os.geteuid() != 0:
        return "needs root: sipp sends the RFC 2833 key from a raw socket"
    if shutil.which("sipp") is None:
        return "sipp is not installed (Debian sip-tester; `make test` installs it)"
    if shutil.which("kamailio") is None and not Path("/usr/sbin/kamailio").exists():
        return "Kamailio is not installed (`make run` installs it)"
    return None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--workers", type=int, default=0, help="call workers (default 50; quick 20)")
    ap.add_argument("--levels", default="40,80,120,160,200", help="concurrent calls, in order")
    ap.add_argument("--rate", type=float, default=8.0, help="least set-up rate of a level, /s")
    ap.add_argument("--hold-ms", type=int, default=0, help="hold after the key (default 30000)")
    ap.add_argument("--rates", default="5,10,15,20,30,40,60", help="set-up rates, calls/s")
    ap.add_argument("--step-seconds", type=float, default=10.0, help="length of a rate step")
    ap.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--no-reference", action="store_true", help="skip the sipp UAS reference")
    ap.add_argument("--quick", action="store_true", help="20 workers, 3 small levels, ~4 min")
    ap.add_argument("--time-limit", type=float, default=1800.0, help="seconds, whole run")
    ap.add_argument("--keep", action="store_true", help="keep the data and sipp folders")
    return ap.parse_args(argv)


def _interrupt(*_: object) -> None:
    """SIGTERM ends the run like Ctrl-C: every `finally` stops what it started."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if problem := check_tools():
        print(problem, file=sys.stderr)
        return 2
    plan = make_plan(args)
    signal.signal(signal.SIGTERM, _interrupt)
    clock = Clock(plan.time_limit_s)
    out = Results()
    tmp = Path(tempfile.mkdtemp(prefix="voice-capacity-"))
    cluster = None
    try:
        ticks = machine_ticks()
        time.sleep(5.0)
        out.busy_before = busy_percent(ticks, machine_ticks())
        database_url = None
        if plan.database == "postgresql":
            from tests.pg import start_postgres

            cluster = start_postgres()
            database_url = cluster.create_database()
        progress(f"starting {plan.workers} workers ({tmp})")
        started = time.monotonic()
        server = start_server(tmp / "fleet", fleet_env(plan, database_url))
        out.started_s = time.monotonic() - started
        try:
            measure_fleet(plan, server, tmp, out, clock)
        finally:
            stop_server(server)
        measure_reference(plan, tmp, out, clock)
    except KeyboardInterrupt:
        out.notes.append("interrupted")
    finally:
        if cluster is not None:
            cluster.stop()
        if args.keep:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_report(plan, out, time.monotonic() - clock.start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
