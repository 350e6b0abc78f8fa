"""Soak: a real `voice serve` fleet under mixed calls for N minutes, a worker killed every few.

Starts the fleet behind Kamailio on loopback (as bench/capacity.py does, with the collectors'
softphones and the trunk's gateway of tests/integration/test_agent_fleet.py), then for
`--minutes`, all at once:
- IVR calls: sipp's fleet caller (tests/sipp/fleet_ivr_call.xml: greeting, key 1, the
  balance, a hold, BYE) at `--rate` new calls/s;
- transfers: the same caller pressing 0, every `--transfer-every` s, staying on the line;
  they ring Dana Whitfield's softphone (baresip, one call at a time: while it is on a call the
  next transfer ends in voicemail, and both are counted);
- Make a Call: Marcus Lee's `POST /api/calls` for account 20001, one after another: his
  softphone answers, the gateway UA answers the customer's leg and hangs up after a few seconds;
- a worker (one holding calls) killed with SIGKILL every `--kill-every` minutes.
Every note goes to a webhook receiver on 127.0.0.1.

It prints calls by kind and outcome; failed calls other than those a killed worker held
(goal 0); the memory growth of each process from its first sample after the warm-up to its
last (goal under 50 MB); recordings complete and their hashes verified (goal 100 %); a note
for every call that reached an account (100 %); webhook deliveries (100 %, duplicates only from
retries); the histograms /metrics exposes. Asserts nothing. Needs root (sipp's RFC 2833 keys),
sipp, Kamailio and baresip.

Usage: python bench/soak.py [--minutes 30] [--rate R] [--kill-every 5] [--workers 50] [--help]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import capacity  # noqa: E402
from bench.soak_check import (  # noqa: E402
    MemorySampler,
    RunCall,
    Stores,
    check_stores,
    histograms,
    log_counts,
    run_calls,
    wait_delivered,
    wait_settled,
)
from bench.soak_traffic import (  # noqa: E402
    Killer,
    MakeCalls,
    Receiver,
    SippSource,
    transfer_scenario,
)
from tests.integration.conftest import Server, stop_server  # noqa: E402
from tests.integration.test_agent_fleet import PASSWORD, start_fleet  # noqa: E402
from tests.integration.test_agent_transfer import Softphone  # noqa: E402
from tests.integration.test_api import token_of, voice_users  # noqa: E402

# README "Capacity" (bench/capacity.py, 50 workers, SQLite, 2026-12-04): 200 concurrent IVR
# calls (the bench's top level) and 60 calls/s set-up with zero failures. Half: 100 up at once.
CAPACITY_CALLS = 200
IVR_HOLD_MS = 20_000  # after the key: the balance (~8 s) and some of the menu after it
IVR_CALL_S = capacity.GREETING_S + IVR_HOLD_MS / 1000
DEFAULT_RATE = round(CAPACITY_CALLS / 2 / IVR_CALL_S, 1)  # 4.7/s keeps ~100 calls up
TRANSFER_HOLD_MS = 15_000  # the customer stays on the line with the collector (or voicemail)
MEMORY_GOAL_MB = 50.0
SECRET = "soak-webhook-secret"
MAKE_A_CALL_ACCOUNT = "20001"  # Marcus Lee's; its one contact +12125550102 is allowed


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the soak")
    ap.add_argument("--rate", type=float, default=DEFAULT_RATE,
                    help=f"new IVR calls/s (default {DEFAULT_RATE:g}: ~{CAPACITY_CALLS // 2} up, "
                    "half the README's capacity)")  # fmt: skip
    ap.add_argument("--kill-every", type=float, default=5.0, help="minutes between SIGKILLs")
    ap.add_argument("--transfer-every", type=float, default=8.0, help="seconds between transfers")
    ap.add_argument("--workers", type=int, default=50, help="call workers (capacity.py's 50)")
    ap.add_argument(
        "--warmup",
        type=float,
        default=0.0,
        help="seconds before memory counts (default 60, 20 %% of a short run)",
    )
    ap.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--keep", action="store_true", help="keep the data and sipp folders")
    return ap.parse_args(argv)


def add_softphone(server: Server, name: str, collector: str) -> None:
    """A softphone login for `collector` (start_fleet adds alice for Dana Whitfield)."""
    env = {**os.environ, "VOICE_DATA_DIR": str(server.data_dir)}
    subprocess.run(
        [sys.executable, "-m", "voice", "--config", str(REPO / "config.toml"), "softphones",
         "add", name, "--collector", collector, "--password-stdin"],
        input=f"{PASSWORD}\n".encode(), env=env, capture_output=True, timeout=30, check=True,
    )  # fmt: skip


def phone(server: Server, folder: Path, user: str) -> Softphone:
    """A registered softphone that takes one call at a time (the next gets 486 Busy Here)."""
    sp = Softphone(folder / user, user, registrar=(server.sip_port, PASSWORD), max_calls=1)
    for _ in range(100):  # registered within 10 s
        if "200 OK" in sp.text():
            return sp
        time.sleep(0.1)
    sp.stop()
    raise RuntimeError(f"softphone {user} did not register:\n{sp.text()[-2000:]}")


def fleet_env(args: argparse.Namespace, receiver: Receiver, database_url: str | None) -> dict:
    plan = capacity.make_plan(capacity.parse_args(["--workers", str(args.workers)]))
    return {
        **capacity.fleet_env(plan, database_url),
        "VOICE_AGENTS_TRY_TEAM": "false",  # Dana's softphone or voicemail, nobody else
        "VOICE_WEBHOOK_URL": receiver.url,
        "VOICE_WEBHOOK_SECRET": SECRET,
        "VOICE_WEBHOOK_POLL_INTERVAL": "1",
        "VOICE_WEBHOOK_BACKOFF_INITIAL": "2",
    }


def soak(args: argparse.Namespace, tmp: Path, database_url: str | None) -> None:
    seconds = args.minutes * 60
    warmup = args.warmup or min(60.0, 0.2 * seconds)
    with Receiver(SECRET) as receiver:
        capacity.progress(f"starting {args.workers} workers ({tmp})")
        server = start_fleet(tmp / "fleet", **fleet_env(args, receiver, database_url))
        phones: list[Softphone] = []
        try:
            add_softphone(server, "bob", "Marcus Lee")
            phones = [phone(server, tmp, "alice"), phone(server, tmp, "bob")]
            token = token_of(voice_users(server, "add", "marcus", "--role", "collector",
                                         "--collector", "Marcus Lee"))  # fmt: skip
            run(args, server, tmp, token, receiver, seconds, warmup)
        finally:
            for sp in phones:
                sp.stop()
            stop_server(server)


def run(args: argparse.Namespace, server: Server, tmp: Path, token: str, receiver: Receiver,
        seconds: float, warmup: float) -> None:  # fmt: skip
    first = capacity.last_call_id(server)
    start = time.monotonic()
    deadline = start + seconds
    ivr = SippSource("ivr", tmp / "sipp-ivr", server.sip_port, args.rate, seconds, IVR_HOLD_MS)
    transfers = SippSource("transfer", tmp / "sipp-transfer", server.sip_port,
                           1 / args.transfer_every, seconds, TRANSFER_HOLD_MS,
                           scenario=transfer_scenario(tmp / "scenarios"))  # fmt: skip
    makes = MakeCalls(server, tmp / "make-a-call", token, MAKE_A_CALL_ACCOUNT, deadline)
    killer = Killer(server, args.kill_every * 60, deadline)
    memory = MemorySampler(server, max(5.0, min(30.0, seconds / 20)), deadline + 5)
    capacity.progress(f"soak: {args.minutes:g} min, {args.rate:g} IVR calls/s, a transfer every "
                      f"{args.transfer_every:g} s, Make a Call in a loop, a kill every "
                      f"{args.kill_every:g} min")  # fmt: skip
    threads = [threading.Thread(target=t, name=n, daemon=True) for n, t in
               (("ivr", ivr), ("transfers", transfers), ("make-a-call", makes),
                ("killer", killer), ("memory", memory))]  # fmt: skip
    try:
        for t in threads:
            t.start()
        for t in threads[:3]:  # the callers end on their own, bounded by their own limits
            t.join(seconds + 300)
    finally:
        killer.stop.set()
        makes.stop.set()
        memory.stop.set()
        for t in threads:
            t.join(60)
    elapsed = time.monotonic() - start
    capacity.progress("calls done; waiting for the journal, notes and webhooks to settle")
    still_open = wait_settled(server, first)
    wait_delivered(server)
    time.sleep(3.0)  # a delivery acknowledged just now is marked delivered
    calls = run_calls(server, first, killer.kills)
    stores = check_stores(server, calls, receiver)
    report(args, elapsed, warmup, ivr, transfers, makes, killer, memory, calls, stores,
           still_open, histograms(server), log_counts(server), start)  # fmt: skip


def pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.1f} %)" if whole else "0/0"


def report(args: argparse.Namespace, elapsed: float, warmup: float, ivr: SippSource,
           transfers: SippSource, makes: MakeCalls, killer: Killer, memory: MemorySampler,
           calls: list[RunCall], stores: Stores, still_open: int, hist: list[str],
           logs: dict[str, int], start: float) -> None:  # fmt: skip
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"\n# Soak: {elapsed / 60:.1f} min, {args.workers} workers, {args.database}, "
        f"{args.rate:g} IVR calls/s, a transfer every {args.transfer_every:g} s, Make a Call "
        f"in a loop, SIGKILL every {args.kill_every:g} min; load average now {' '.join(load)}"
    )
    print("\n## Calls by kind and outcome (the server's journal)")
    by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for c in calls:
        by_kind[c.kind][c.outcome + (" [held by a killed worker]" if c.held_by_kill else "")] += 1
    for kind, outcomes in sorted(by_kind.items()):
        text = ", ".join(f"{n} {o}" for o, n in outcomes.most_common())
        print(f"- {kind}: {sum(outcomes.values())}: {text}")
    api_outcomes = collections.Counter(m.outcome for m in makes.calls)
    print(
        f"- Make a Call at the API: {len(makes.calls)}: "
        + ", ".join(f"{n} {o}" for o, n in api_outcomes.most_common())
    )
    for src in (ivr, transfers):
        r = src.run
        if r:
            print(
                f"- sipp {src.kind}: {r.calls} placed, {r.ok} ok, {r.failed} failed, peak {r.peak}"
                + (f" [{r.errors}]" if r.errors else "")
            )
    missed = f" ({len(killer.missed)} due but not done: {', '.join(killer.missed)})"
    print(f"\n## Kills: {len(killer.kills)}" + (missed if killer.missed else ""))
    for k in killer.kills:
        held = sum(1 for c in calls if c.held_by_kill and c.worker == k.worker)
        print(
            f"- {k.at - time.time() + time.monotonic() - start:.0f} s: {k.worker} (pid {k.pid}),"
            f" {k.calls} calls up per /healthz; {held} journaled as interrupted; "
            + (
                f"restarted in {k.restarted_s:.1f} s"
                if k.restarted_s is not None
                else "NOT restarted within 30 s (the supervisor did not see it die)"
            )
        )
    failures(calls, ivr, transfers, makes, still_open)
    print_memory(memory, start + warmup, warmup)
    print("\n## Recordings, notes, webhooks")
    rec_total = sum(stores.recordings.values())
    complete = stores.recordings["final"] + stores.recordings["interrupted"]
    print(
        f"- recordings complete: {pct(complete, rec_total)} "
        f"({dict(stores.recordings)}); hash verified: "
        f"{pct(stores.verified['ok'], complete)} ({dict(stores.verified)})"
    )
    others = stores.with_account - stores.held_with_account
    print(
        f"- a note for every call that reached an account: "
        f"{pct(stores.with_note, stores.with_account)}; without the killed workers' calls "
        f"{pct(stores.with_note - stores.held_with_note, others)}"
    )
    print(
        f"- webhook deliveries received: {pct(stores.received, stores.outbox)} of the outbox "
        f"(marked delivered {stores.outbox_delivered}, given up {stores.outbox_failed}); "
        f"duplicates {stores.duplicates} ({stores.duplicates_retried} of them retried), "
        f"unknown ids {stores.unknown_ids}, bad signatures {stores.bad_signatures}"
    )
    print("\n## /metrics histograms at the end")
    for line in hist:
        print(f"- {line}")
    print(f"\nserver log: {', '.join(f'{n}x {w}' for w, n in logs.items())}")


def failures(calls: list[RunCall], ivr: SippSource, transfers: SippSource, makes: MakeCalls,
             still_open: int) -> None:  # fmt: skip
    ok_outcomes = {"completed", "connected", "voicemail"}
    bad = [c for c in calls if not c.held_by_kill and c.outcome not in ok_outcomes]
    held_ids = {c.sip_call_id for c in calls if c.held_by_kill}
    sipp_bad = [i for s in (ivr, transfers) for i in sorted(s.failed_ids - held_ids)]
    known = {c.sip_call_id for c in calls}
    unjournaled = [i for i in sipp_bad if i not in known]
    held_make = {c.id for c in calls if c.held_by_kill}
    make_bad = [m for m in makes.calls if m.outcome != "connected" and m.call_id not in held_make]
    print("\n## Failed calls other than those a killed worker held (goal 0)")
    example: dict[str, int] = {}
    for c in bad:
        example.setdefault(f"{c.kind}: {c.outcome}", c.id)
    kinds = collections.Counter(f"{c.kind}: {c.outcome}" for c in bad)
    lines = [f"\n  - {n}x {what} (e.g. call {example[what]})" for what, n in kinds.most_common(8)]
    print(f"- in the journal: {len(bad)}" + "".join(lines))
    print(
        f"- sipp's failed calls not held by a killed worker: {len(sipp_bad)} "
        f"({len(unjournaled)} never journaled)"
        + (f": {', '.join(sipp_bad[:8])}" if sipp_bad else "")
    )
    print(
        f"- Make a Call not connected (not held by a killed worker): {len(make_bad)}"
        + "".join(f"\n  - {m.call_id}: {m.outcome} {m.gateway_error}" for m in make_bad[:8])
    )
    if still_open:
        print(f"- still in progress after the wait: {still_open}")


def print_memory(memory: MemorySampler, after: float, warmup: float) -> None:
    growth = memory.growth(after)
    print(
        f"\n## Memory growth, first to last sample after a {warmup:.0f} s warm-up "
        f"(goal < {MEMORY_GOAL_MB:g} MB each)"
    )
    if not growth:
        print("- no process sampled twice after the warm-up")
        return
    workers = {k: v for k, v in growth.items() if k[0].startswith("w") and k[0][1:].isdigit()}
    for key, (pss, rss, last, n) in sorted(growth.items()):
        if key not in workers:
            print(
                f"- {key[0]} (pid {key[1]}): PSS {pss:+.1f} MB, RSS {rss:+.1f} MB "
                f"(now {last:.0f} MB PSS, {n} samples)"
            )
    if workers:
        pss_g = sorted(((v[0], k) for k, v in workers.items()), reverse=True)
        over = sum(1 for g, _ in pss_g if g >= MEMORY_GOAL_MB)
        top = ", ".join(f"{k[0]} {g:+.1f}" for g, k in pss_g[:3])
        mean = sum(g for g, _ in pss_g) / len(pss_g)
        rss_max = max(v[1] for v in workers.values())
        print(
            f"- workers ({len(workers)} processes): PSS growth mean {mean:+.1f} MB, "
            f"most {top} MB; RSS growth max {rss_max:+.1f} MB; {over} at or over the goal"
        )


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if problem := capacity.check_tools():
        print(problem, file=sys.stderr)
        return 2
    if shutil.which("baresip") is None:
        print("baresip is not installed (Debian baresip-core)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="voice-soak-"))
    cluster = None
    try:
        database_url = None
        if args.database == "postgresql":
            from tests.pg import start_postgres

            cluster = start_postgres()
            database_url = cluster.create_database()
        soak(args, tmp, database_url)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    finally:
        if cluster is not None:
            cluster.stop()
        if args.keep:
            capacity.progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
