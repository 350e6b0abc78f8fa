"""What bench/soak.py checks after its run: the database, the recordings on disk, the webhook
receiver's tally, the memory samples and the /metrics histograms."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx
from sqlalchemy import func, select

from accounts.models import Call, CallEvent, Note, Recording, WebhookOutbox
from bench.capacity import group_usage
from bench.soak_traffic import Kill, Receiver, pids_now
from recordings.verify import verify
from tests.integration.conftest import Server
from voice.procinfo import usage

MB = 1024.0


# -- the calls ----------------------------------------------------------------------------------


@dataclass
class RunCall:
    id: int
    kind: str  # ivr | transfer | make a call | other
    outcome: str
    worker: str
    sip_call_id: str
    status: str
    account_id: int | None
    started: float
    ended: float | None
    held_by_kill: bool = False


def wait_settled(server: Server, first: dt.datetime, timeout: float = 90.0) -> int:
    """Wait until no call started since `first` is in progress (the write-behind has drained);
    return how many still are when `timeout` ends."""
    deadline = time.monotonic() + timeout
    while True:
        with server.session() as session:
            open_ = session.scalar(select(func.count(Call.id)).where(
                Call.started_at >= first, Call.status == "in_progress")) or 0  # fmt: skip
        if not open_ or time.monotonic() > deadline:
            return open_
        time.sleep(2.0)


def stamp(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value else None


def run_calls(server: Server, first: dt.datetime, kills: list[Kill]) -> list[RunCall]:
    """Every call started since `first` (ids come in per-worker blocks), by kind, with its
    outcome; a call the worker held when it was killed is marked (its failure is the kill's,
    not the system's)."""
    with server.session() as session:
        since = select(Call.id).where(Call.started_at >= first)
        calls = session.scalars(
            select(Call).where(Call.started_at >= first).order_by(Call.started_at, Call.id)
        ).all()
        events: dict[int, list[tuple[str, dict[str, object]]]] = collections.defaultdict(list)
        rows = session.execute(
            select(CallEvent.call_id, CallEvent.kind, CallEvent.detail)
            .where(CallEvent.call_id.in_(since))
            .order_by(CallEvent.seq)
        )
        for call_id, kind, detail in rows:  # fmt: skip
            events[call_id].append((kind, detail or {}))
    out = []
    for c in calls:
        kind, outcome = classify(c, events[c.id])
        started = stamp(c.started_at) or 0.0
        rc = RunCall(c.id, kind, outcome, c.worker, c.sip_call_id, c.status, c.account_id,
                     started, stamp(c.ended_at))  # fmt: skip
        rc.held_by_kill = any(
            k.worker == c.worker and started <= k.at + 0.5 and c.status == "interrupted"
            and (rc.ended is None or rc.ended >= k.at - 1.0) for k in kills
        )  # fmt: skip
        out.append(rc)
    return out


def classify(call: Call, events: list[tuple[str, dict[str, object]]]) -> tuple[str, str]:
    kinds = [k for k, _ in events]
    if call.status in ("failed", "interrupted"):
        outcome = f"{call.status} ({call.end_reason or '?'})"
    else:
        outcome = call.status
    if "click_to_call" in kinds:
        done = kinds[-2:] == ["bridged", "ended"]
        last = next((k for k in reversed(kinds) if k != "ended"), "no events")
        if call.status != "completed":
            return "make a call", outcome
        return "make a call", "connected" if done else last
    agent = [d for k, d in events if k == "agent"]
    if agent:
        return "transfer", str(agent[-1].get("outcome")) if call.status == "completed" else outcome
    if any(k == "choice" and d.get("option") == "agent" for k, d in events):
        return "transfer", outcome if call.status != "completed" else "ended before the agent"
    if call.direction == "inbound":
        balance = any(k == "choice" and d.get("option") == "balance" for k, d in events)
        return "ivr", outcome if call.status != "completed" or balance else "completed, no key"
    return "other", outcome


# -- notes, recordings, webhooks ----------------------------------------------------------------


@dataclass
class Stores:
    with_account: int = 0
    with_note: int = 0
    held_with_account: int = 0
    held_with_note: int = 0
    recordings: collections.Counter[str] = field(default_factory=collections.Counter)
    verified: collections.Counter[str] = field(default_factory=collections.Counter)
    outbox: int = 0
    outbox_delivered: int = 0
    outbox_failed: int = 0
    received: int = 0  # outbox ids the receiver got at least once
    duplicates: int = 0  # outbox ids it got more than once
    duplicates_retried: int = 0  # ... of which the outbox made more than one attempt
    unknown_ids: int = 0  # delivery ids the receiver got that are not in the outbox
    bad_signatures: int = 0


def wait_delivered(server: Server, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with server.session() as session:
            outbox = WebhookOutbox
            pending = session.scalar(select(func.count(outbox.id)).where(
                outbox.delivered_at.is_(None), outbox.failed_at.is_(None)))  # fmt: skip
        if not pending:
            return
        time.sleep(2.0)


def check_stores(server: Server, calls: list[RunCall], receiver: Receiver) -> Stores:
    out = Stores(bad_signatures=receiver.bad_signatures)
    ids = [c.id for c in calls]
    with server.session() as session:
        noted = set(session.scalars(select(Note.call_id).where(Note.call_id.in_(ids))) if ids
                    else ())  # fmt: skip
        recordings = list(session.scalars(select(Recording).where(Recording.call_id.in_(ids))))
        outbox = session.execute(
            select(
                WebhookOutbox.id,
                WebhookOutbox.attempts,
                WebhookOutbox.delivered_at,
                WebhookOutbox.failed_at,
            )
        ).all()
    for c in calls:
        if c.account_id is not None:
            out.with_account += 1
            out.with_note += c.id in noted
            out.held_with_account += c.held_by_kill
            out.held_with_note += c.held_by_kill and c.id in noted
    root = server.data_dir / "recordings"
    for rec in recordings:
        out.recordings[rec.status] += 1
        if rec.status in ("final", "interrupted"):
            out.verified[verify(rec, root).result] += 1
    known = set()
    for row_id, attempts, delivered, failed in outbox:
        known.add(row_id)
        out.outbox += 1
        out.outbox_delivered += delivered is not None
        out.outbox_failed += failed is not None
        got = receiver.got.get(row_id, 0)
        out.received += got > 0
        out.duplicates += got > 1
        out.duplicates_retried += got > 1 and attempts > 1
    out.unknown_ids = len(set(receiver.got) - known)
    return out


# -- memory ---------------------------------------------------------------------------------------


class MemorySampler:
    """PSS and RSS of every fleet process every `every_s` (Kamailio: its process group,
    summed), keyed by (name, pid) so that a restarted worker is a new process."""

    def __init__(self, server: Server, every_s: float, deadline: float) -> None:
        self.server, self.every_s, self.deadline = server, every_s, deadline
        self.samples: dict[tuple[str, int], list[tuple[float, int, int]]] = (
            collections.defaultdict(list))  # fmt: skip
        self.stop = threading.Event()

    def __call__(self) -> None:
        for _ in range(100_000):
            self.sample()
            if self.stop.wait(self.every_s) or time.monotonic() > self.deadline:
                break
        self.sample()

    def sample(self) -> None:
        now = time.monotonic()
        for name, pid in pids_now(self.server).items():
            if name == "kamailio":
                count, _, pss = group_usage(pid)
                self.samples[(f"kamailio ({count} processes)", pid)].append((now, pss, 0))
            elif (use := usage(pid)) is not None:
                self.samples[(name, pid)].append((now, use.pss_kb, use.rss_kb))

    def growth(self, after: float) -> dict[tuple[str, int], tuple[float, float, float, int]]:
        """(name, pid) -> (PSS growth MB, RSS growth MB, last PSS MB, samples) from the first
        sample at or after `after` (monotonic) to the last, for processes sampled twice there."""
        out = {}
        for key, rows in self.samples.items():
            inside = [r for r in rows if r[0] >= after]
            if len(inside) >= 2:
                first, last = inside[0], inside[-1]
                out[key] = ((last[1] - first[1]) / MB, (last[2] - first[2]) / MB,
                            last[1] / MB, len(inside))  # fmt: skip
        return out


# -- /metrics -------------------------------------------------------------------------------------


def histograms(server: Server) -> list[str]:
    """Every histogram /metrics exposes: count, mean and bucket bounds of p50 / p95."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"http://127.0.0.1:{server.http_port}/metrics", timeout=10).text
        families = list(text_string_to_metric_families(text))
    except (httpx.HTTPError, ValueError) as exc:
        return [f"/metrics unreadable: {exc!r}"[:200]]
    lines = []
    for family in families:
        if family.type != "histogram":
            continue
        series: dict[str, dict[str, object]] = collections.defaultdict(dict)
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            entry = series[labels]
            if s.name.endswith("_bucket"):
                entry.setdefault("buckets", []).append((float(s.labels["le"]), s.value))  # type: ignore[union-attr]
            elif s.name.endswith("_count"):
                entry["count"] = s.value
            elif s.name.endswith("_sum"):
                entry["sum"] = s.value
        for labels, entry in series.items():
            count = float(entry.get("count", 0.0))  # type: ignore[arg-type]
            if not count:
                lines.append(f"{family.name}{{{labels}}}: no observations")
                continue
            buckets = sorted(entry.get("buckets", []))  # type: ignore[call-overload]
            mean = float(entry.get("sum", 0.0)) / count  # type: ignore[arg-type]
            lines.append(
                f"{family.name}{{{labels}}}: {count:.0f} observed, mean {mean * 1000:.1f} ms, "
                f"p50 <= {bound(buckets, count, 0.5)}, p95 <= {bound(buckets, count, 0.95)}"
            )
    return lines or ["/metrics exposes no histogram"]


def bound(buckets: Iterable[tuple[float, float]], count: float, q: float) -> str:
    """The upper bound of the first bucket holding the q-th observation."""
    for le, cumulative in buckets:
        if cumulative >= q * count:
            return "+Inf" if math.isinf(le) else f"{le * 1000:g} ms"
    return "?"


def log_counts(server: Server) -> dict[str, int]:
    text = ""
    with contextlib.suppress(OSError):
        text = server.log()
    return {
        "database is locked": text.count("database is locked"),
        "Traceback": text.count("Traceback"),
        "ERROR": text.count(" ERROR "),
    }
