"""The collectors' pages at depth: p50/p95 of /today and /accounts/{number}, next to the plain SQL.

    nice -n 10 .venv/bin/python bench/pages.py                 # 100,000 accounts, 1,000,000 notes
    nice -n 10 .venv/bin/python bench/pages.py --accounts 20000 --database sqlite

Fills a fresh database (SQLite in a temporary folder; PostgreSQL from tests/pg.py) with
accounts/portfolio.py's portfolio (`voice demo --accounts N`): 50 collectors, N accounts with
aging invoices, payments, a call each and 10 notes on average, some promises and follow-ups.
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
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
from sqlalchemy import Engine, event  # noqa: E402
from starlette.applications import Starlette  # noqa: E402

from accounts.db import create_schema, make_sessions  # noqa: E402
from accounts.logins import Passwords  # noqa: E402
from accounts.portfolio import COLLECTORS, fill  # noqa: E402
from accounts.users import Users  # noqa: E402
from bench.scratch import add_database_option, chosen, scratch_engine  # noqa: E402
from bench.search import timed  # noqa: E402
from voice.api import api_mount  # noqa: E402
from voice.pages import pages_routes  # noqa: E402

RUNS = 30
PASSWORD = "bench password 1"


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
