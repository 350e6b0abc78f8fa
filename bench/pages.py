"""The collectors' pages at depth: p50/p95 of /today and /accounts/{number}, next to the plain SQL.

    nice -n 10 .venv/bin/python bench/pages.py                 # 100,000 accounts, 1,000,000 notes
    nice -n 10 .venv/bin/python bench/pages.py --accounts 20000 --database sqlite

Fills a fresh database (SQLite in a temporary folder; PostgreSQL from tests/pg.py) with a
portfolio: 50 collectors; N accounts, each with a customer, a contact, 1-4 invoices spread over
an aging of 0-180 days (about a third paid), a payment, a call, and 10 notes on average (one of
them the call's note); 2 % of the calls marked as a promise to pay or a follow-up, some due.
Then, in this process, through the real app (the pages mounted as voice/app.py mounts them,
logged in as a collector with N/50 accounts, over httpx's ASGI transport):
  - GET /today (the first page of the collector's worklist, ordered by accounts/worklist.py);
  - GET /accounts/{number} for random accounts of that collector.
"plain SQL" is the same statements the request ran (captured from the engine during one
request), replayed on a raw DBAPI cursor: the database's share of the page; ratio = page / SQL.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from sqlalchemy import Engine, event, insert  # noqa: E402
from starlette.applications import Starlette  # noqa: E402

from accounts.db import create_schema, make_sessions  # noqa: E402
from accounts.logins import Passwords  # noqa: E402
from accounts.models import (  # noqa: E402
    Account,
    Call,
    CallOutcome,
    Collector,
    Contact,
    Customer,
    Invoice,
    Note,
    Payment,
)
from accounts.users import Users  # noqa: E402
from bench.scratch import add_database_option, chosen, scratch_engine  # noqa: E402
from bench.search import timed  # noqa: E402
from voice.api import api_mount  # noqa: E402
from voice.pages import pages_routes  # noqa: E402

COLLECTORS = 50
NOTES_PER_ACCOUNT = 10
BLOCK = 2_000  # accounts per bulk insert (about 20,000 rows)
RUNS = 30
PASSWORD = "bench password 1"
NOW = dt.datetime.now(dt.UTC)
TODAY = dt.date.today()


KEYS = ("cust", "acct", "cont", "inv", "pay", "call", "note", "out")


def _rows(first: int, last: int, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """Accounts first..last as row dicts, ids given here (bulk inserts, no ORM events)."""
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in KEYS}
    for i in range(first, last + 1):
        out["cust"].append({"id": i, "name": f"Customer {i}"})
        out["acct"].append(
            {
                "id": i,
                "number": f"A{i:07d}",
                "customer_id": i,
                "collector_id": i % COLLECTORS + 1,
                "currency": "USD",
                "timezone": "America/New_York",
                "created_at": NOW,
            }
        )
        out["cont"].append({"account_id": i, "phone_e164": f"+1646{i:07d}", "label": "AP"})
        for k in range(rng.randint(1, 4)):
            due = TODAY - dt.timedelta(days=rng.randint(-30, 180))
            cents = rng.randint(50, 50_000) * 100
            paid = rng.random() < 0.33
            out["inv"].append(
                {
                    "account_id": i,
                    "number": f"I{i}-{k}",
                    "amount_cents": cents,
                    "open_cents": 0 if paid else cents,
                    "due_date": due,
                    "issue_date": due - dt.timedelta(days=30),
                }
            )
        paid_on = TODAY - dt.timedelta(days=rng.randint(1, 300))
        out["pay"].append(
            {
                "account_id": i,
                "date": paid_on,
                "amount_cents": rng.randint(10, 5000) * 100,
                "reference": f"P{i}",
            }
        )
        started = NOW - dt.timedelta(days=rng.randint(1, 60))
        out["call"].append(
            {
                "id": i,
                "direction": "outbound",
                "caller": "sip:c",
                "callee": f"+1646{i:07d}",
                "account_id": i,
                "worker": "w0",
                "sip_call_id": f"b{i}",
                "status": "completed",
                "started_at": started,
                "answered_at": started,
                "ended_at": started,
            }
        )
        for k in range(rng.randint(NOTES_PER_ACCOUNT - 5, NOTES_PER_ACCOUNT + 5)):
            out["note"].append(
                {
                    "account_id": i,
                    "call_id": i if k == 0 else None,
                    "created_at": started + dt.timedelta(minutes=k),
                    "author": "ivr",
                    "kind": "call" if k == 0 else "manual",
                    "body": f"Note {k} on account {i}: about the invoice.",
                }
            )
        if rng.random() < 0.02:
            promise = rng.random() < 0.5
            due = TODAY + dt.timedelta(days=rng.randint(-10, 10))
            out["out"].append(
                {
                    "call_id": i,
                    "account_id": i,
                    "collector_id": i % COLLECTORS + 1,
                    "user": "bench",
                    "created_at": started,
                    "kind": "promise_to_pay" if promise else "follow_up",
                    "amount_cents": 10000 if promise else None,
                    "currency": "USD" if promise else None,
                    "promise_date": due if promise else None,
                    "follow_up_date": None if promise else due,
                }
            )
    return out


def fill(engine: Engine, n: int) -> int:
    """Load the portfolio, a block of accounts at a time; returns the number of notes."""
    with make_sessions(engine).begin() as session:
        session.add_all(Collector(name=f"Collector {i:02d}") for i in range(COLLECTORS))
    tables = dict(
        zip(
            KEYS,
            (Customer, Account, Contact, Invoice, Payment, Call, Note, CallOutcome),
            strict=True,
        )
    )
    rng, notes = random.Random(7), 0
    for first in range(1, n + 1, BLOCK):
        rows = _rows(first, min(n, first + BLOCK - 1), rng)
        with engine.begin() as conn:
            for key in KEYS:
                if rows[key]:
                    conn.execute(insert(tables[key]), rows[key])
        notes += len(rows["note"])
        print(f"\r  loaded {min(n, first + BLOCK - 1):,} accounts, {notes:,} notes", end="")
    print()
    if engine.dialect.name == "postgresql":  # ids were given explicitly: move the sequences on
        with engine.begin() as conn:
            for table in ("customers", "accounts", "calls"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
    return notes


class Recorder:
    """The statements an engine runs while `on` (to replay as plain SQL)."""

    def __init__(self, engine: Engine) -> None:
        self.on, self.seen = False, []  # type: ignore[var-annotated]
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if self.on:
            self.seen.append((statement, params))


def _client_get(app: Any, cookies: httpx.Cookies, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", cookies=cookies
        ) as client:
            return await client.get(path)

    return asyncio.run(go())


def _login(app: Any) -> httpx.Cookies:
    async def go() -> httpx.Cookies:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            page = await client.get("/login")
            token = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            data = {"csrf": token, "name": "bench", "password": PASSWORD, "next": "/today"}
            answer = await client.post("/login", data=data)
            assert answer.status_code == 303, answer.text
            return httpx.Cookies(client.cookies)

    return asyncio.run(go())


def _replay(engine: Engine, statements: list[tuple[str, Any]]) -> None:
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for statement, params in statements:
            if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
                continue  # the audit row and the session touch: writes, not the page's reading
            cursor.execute(statement, params)
            cursor.fetchall()
        cursor.close()
        raw.rollback()
    finally:
        raw.close()


def measure(engine: Engine, n: int) -> list[tuple[str, float, float, float, float]]:
    sessions = make_sessions(engine)
    Users(sessions).add("bench", "collector", "Collector 07")
    Passwords(sessions).set("bench", PASSWORD)
    app = Starlette(routes=[api_mount(sessions), *pages_routes(sessions)])
    cookies = _login(app)
    recorder = Recorder(engine)
    mine = [f"A{i:07d}" for i in range(1, n + 1) if i % COLLECTORS + 1 == 8]
    rng = random.Random(3)
    cases = {
        f"/today ({len(mine):,} accounts)": lambda: "/today",
        "/accounts/{number}": lambda: f"/accounts/{rng.choice(mine)}",
    }
    rows = []
    for name, path in cases.items():

        def page(path: Any = path) -> None:
            answer = _client_get(app, cookies, path())
            assert answer.status_code == 200, answer.text[:500]

        p50, p95, _ = timed(page, RUNS)
        recorder.seen, recorder.on = [], True
        page()
        recorder.on = False
        statements = list(recorder.seen)
        d50, d95, _ = timed(lambda statements=statements: _replay(engine, statements), RUNS)
        rows.append((name, p50, p95, d50, d95))
    return rows


def run(database: str, n: int) -> None:
    with scratch_engine(database, "bench-pages-") as engine:
        create_schema(engine)
        start = time.perf_counter()
        notes = fill(engine, n)
        loaded = time.perf_counter() - start
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        print(f"{database}: {n:,} accounts, {notes:,} notes loaded in {loaded:.0f} s")
        head = f"{'p50 ms':>9}{'p95 ms':>9}{'SQL p50':>10}{'SQL p95':>10}{'ratio p95':>11}"
        print(f"  {'page':<28}{head}")
        for name, p50, p95, d50, d95 in measure(engine, n):
            ratio = p95 / max(d95, 1e-6)
            print(f"  {name:<28}{p50:9.1f}{p95:9.1f}{d50:10.2f}{d95:10.2f}{ratio:11.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=100_000, help="default 100,000")
    add_database_option(parser)
    args = parser.parse_args()
    for database in chosen(args):
        run(database, args.accounts)


if __name__ == "__main__":
    main()
