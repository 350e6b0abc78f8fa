"""Recording search at depth: the first page's p50/p95 over N generated recordings with transcripts.

    nice -n 10 .venv/bin/python bench/search.py             # 1,000,000 recordings, both databases
    nice -n 10 .venv/bin/python bench/search.py -n 100000 --database sqlite

Fills a fresh database (SQLite in a temporary folder; PostgreSQL from tests/pg.py) with N calls,
each with one recording and two transcript utterances, spread over three years, 20 collectors,
2,000 accounts and 200,000 phone numbers. It then asks `RecordingSearch.search` (what the API and
the pages run, collector scope off) for the first page (50) of:
  - a phone number, typed as "(212) 555-0123" (any spelling: caller or callee);
  - a collector and a one-month date range;
  - a transcript word (through the text index).
Each beside a direct indexed query in the same process: the smallest hand-written SQL that
answers the same question from the same index (ratio = search / direct). The transcript text index
is built after the load (create_schema's path for an existing database); ANALYZE runs once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, insert, text  # noqa: E402

from accounts import textindex  # noqa: E402
from accounts.db import create_schema, make_sessions  # noqa: E402
from accounts.models import Account, Call, Collector, Customer, Recording, Transcript  # noqa: E402
from bench.scratch import add_database_option, chosen, scratch_engine  # noqa: E402
from recordings.search import RecordingFilter, RecordingSearch, Scope  # noqa: E402

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
SPAN_S = 3 * 365 * 86400
COLLECTORS, ACCOUNTS, PHONES = 20, 2000, 200_000
CHUNK = 20_000
RUNS = 40
# Everyday collections talk, plus rarer words: "chargeback" is in about 1 call in 200.
COMMON = [
    "hello",
    "yes",
    "no",
    "thank",
    "you",
    "calling",
    "about",
    "the",
    "balance",
    "invoice",
    "payment",
    "pay",
    "friday",
    "monday",
    "next",
    "week",
    "account",
    "number",
    "please",
    "can",
    "i",
    "will",
    "we",
    "sent",
    "check",
    "card",
    "bank",
    "transfer",
    "today",
    "tomorrow",
    "amount",
    "due",
    "past",
    "late",
    "fee",
    "call",
    "back",
    "later",
    "speak",
    "to",
    "manager",
    "sorry",
    "understand",
    "okay",
    "right",
]
RARE = ["chargeback", "bankruptcy", "attorney", "dispute", "refund", "overdraft", "garnish"]


def phone(i: int) -> str:
    return f"+1212{5550000 + i:07d}" if i < 10000 else f"+1646{i:07d}"


def _utterance(rng: random.Random) -> str:
    words = rng.choices(COMMON, k=rng.randint(6, 14))
    if rng.random() < 0.0025:  # two utterances per call: about 1 call in 200
        words.insert(rng.randrange(len(words)), RARE[0])
    if rng.random() < 0.02:
        words.insert(rng.randrange(len(words)), rng.choice(RARE[1:]))
    return " ".join(words)


def fill(engine: Engine, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    sessions = make_sessions(engine)
    with sessions.begin() as session:
        session.add_all(Collector(name=f"Collector {i:02d}") for i in range(COLLECTORS))
        session.add_all(Customer(name=f"Customer {i}") for i in range(ACCOUNTS))
    with engine.begin() as conn:
        conn.execute(
            insert(Account),
            [
                {"number": f"{10000 + i}", "customer_id": i + 1, "collector_id": i % COLLECTORS + 1}
                for i in range(ACCOUNTS)
            ],
        )
    done = 0
    while done < n:
        size = min(CHUNK, n - done)
        calls, recs, texts = [], [], []
        for k in range(size):
            cid = done + k + 1
            at = T0 + dt.timedelta(seconds=int(cid / n * SPAN_S))
            outbound = rng.random() < 0.4
            number = phone(rng.randrange(PHONES))
            calls.append(
                {
                    "id": cid,
                    "direction": "outbound" if outbound else "inbound",
                    "caller": "dana" if outbound else number,
                    "callee": number if outbound else "ivr",
                    "account_id": rng.randrange(ACCOUNTS) + 1,
                    "worker": "w0",
                    "sip_call_id": f"bench-{cid}",
                    "status": "completed",
                    "started_at": at,
                }
            )
            recs.append(
                {
                    "id": cid,
                    "call_id": cid,
                    "kind": "call",
                    "path": f"{at:%Y/%m/%d}/call-{cid}-rec-{cid}.flac",
                    "format": "flac",
                    "sample_rate": 16000,
                    "channels": 1,
                    "status": "final",
                    "started_at": at,
                    "duration_s": 60.0,
                    "sha256": "0" * 64,
                    "pauses": [],
                    "legal_hold": False,
                }
            )
            for speaker in ("caller", "ivr"):
                texts.append(
                    {"call_id": cid, "speaker": speaker, "text": _utterance(rng), "words": []}
                )
        with engine.begin() as conn:
            conn.execute(insert(Call), calls)
            conn.execute(insert(Recording), recs)
            conn.execute(insert(Transcript), texts)
        done += size
        print(f"\r  loaded {done:,}/{n:,}", end="", flush=True)
    print()


def drop_text_index(engine: Engine) -> None:
    """Load without the text index, as a database from before it; create_schema adds it."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            for suffix in ("_ai", "_ad", "_au"):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {textindex.FTS_TABLE}{suffix}")
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {textindex.FTS_TABLE}")
        else:
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS {textindex.PG_INDEX}")
            conn.exec_driver_sql(
                f"ALTER TABLE transcripts DROP COLUMN IF EXISTS {textindex.PG_COLUMN}"
            )


def timed(fn: Callable[[], Any], runs: int = RUNS) -> tuple[float, float, Any]:
    fn()  # warm the cache and the statement cache once
    times, last = [], None
    for _ in range(runs):
        start = time.perf_counter()
        last = fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))], last


def direct_sql(dialect: str) -> dict[str, str]:
    if dialect == "sqlite":
        word = (
            f"SELECT rowid FROM {textindex.FTS_TABLE} WHERE {textindex.FTS_TABLE} MATCH :w LIMIT 50"
        )
        wvalue = '"{}"'
    else:
        word = (
            f"SELECT id FROM transcripts WHERE {textindex.PG_COLUMN} @@ "
            "phraseto_tsquery('simple'::regconfig, :w) LIMIT 50"
        )
        wvalue = "{}"
    return {
        "phone": "SELECT r.id FROM calls c JOIN recordings r ON r.call_id = c.id "
        "WHERE c.caller = :p OR c.callee = :p ORDER BY r.started_at DESC LIMIT 50",
        "collector": "SELECT r.id FROM recordings r JOIN calls c ON c.id = r.call_id "
        "JOIN accounts a ON a.id = c.account_id WHERE a.collector_id = :c "
        "AND r.started_at >= :s AND r.started_at < :e ORDER BY r.started_at DESC LIMIT 50",
        "word": word,
        "wvalue": wvalue,
    }


def measure(engine: Engine, n: int) -> list[tuple[str, float, float, float, float, int]]:
    search = RecordingSearch(make_sessions(engine))
    dialect = engine.dialect.name
    sql = direct_sql(dialect)
    month_start = T0 + dt.timedelta(days=400)
    month_end = month_start + dt.timedelta(days=30)
    sqlite_time = (lambda v: v.replace(tzinfo=None)) if dialect == "sqlite" else (lambda v: v)
    cases = {
        "phone (212) 555-0123": (
            RecordingFilter(phone="(212) 555-0123"),
            sql["phone"],
            {"p": "+12125550123"},
        ),
        "collector + one month": (
            RecordingFilter(collector="Collector 07", start=month_start, end=month_end),
            sql["collector"],
            {"c": 8, "s": sqlite_time(month_start), "e": sqlite_time(month_end)},
        ),
        "transcript word": (
            RecordingFilter(words="chargeback"),
            sql["word"],
            {"w": sql["wvalue"].format("chargeback")},
        ),
    }
    rows = []
    for name, (flt, direct, params) in cases.items():
        p50, p95, found = timed(lambda flt=flt: search.search(flt, Scope.all()))
        with engine.connect() as conn:
            d50, d95, _ = timed(
                lambda direct=direct, params=params: conn.execute(text(direct), params).all()
            )
        rows.append((name, p50, p95, d50, d95, len(found)))
    return rows


def run(database: str, n: int) -> None:
    with scratch_engine(database, "bench-search-") as engine:
        create_schema(engine)
        drop_text_index(engine)
        start = time.perf_counter()
        fill(engine, n)
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        create_schema(engine)  # builds the text index over what is there
        indexed = time.perf_counter() - start
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        print(f"{database}: {n:,} recordings loaded in {loaded:.0f} s, text index {indexed:.0f} s")
        print(
            f"  {'query (first page of 50)':<26}{'p50 ms':>9}{'p95 ms':>9}"
            f"{'direct p50':>12}{'direct p95':>12}{'ratio p95':>11}{'found':>7}"
        )
        for name, p50, p95, d50, d95, found in measure(engine, n):
            print(
                f"  {name:<26}{p50:9.1f}{p95:9.1f}{d50:12.2f}{d95:12.2f}"
                f"{p95 / max(d95, 1e-6):11.1f}{found:7d}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("-n", type=int, default=1_000_000, help="recordings (default 1,000,000)")
    add_database_option(parser)
    args = parser.parse_args()
    for database in chosen(args):
        run(database, args.n)


if __name__ == "__main__":
    main()
