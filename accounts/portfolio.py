"""A realistic portfolio at any size, for trying the pages at scale and for bench/pages.py.

    voice demo --accounts 100000        # into an empty database

`fill(engine, n)` adds `COLLECTORS` collectors ("Collector 00" ...) and n accounts
(A0000001 ...), each with a customer, one contact, 1-4 invoices spread over an aging of
-30..180 days past due (about a third paid), a payment, an outbound call, and 5-15 notes
(one of them the call's); 2 % of the calls are marked a promise to pay or a follow-up dated
within 10 days of today. Contact numbers are fictional (NPA-555-01XX). Rows are bulk-inserted
with ids after those already there (the small demo data, an import).
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

from sqlalchemy import Engine, func, insert, select

from accounts.db import make_sessions
from accounts.models import (
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

COLLECTORS = 50
NOTES_PER_ACCOUNT = 10
BLOCK = 2_000  # accounts per bulk insert (about 20,000 rows)


class PortfolioError(RuntimeError):
    pass


def phone(i: int) -> str:
    """A fictional number for account i: +1 NPA 555 01XX."""
    return f"+1{200 + i % 800:03d}55501{(i // 800) % 100:02d}"


KEYS = ("cust", "acct", "cont", "inv", "pay", "call", "note", "out")


def _rows(
    first: int, last: int, rng: random.Random, now: dt.datetime
) -> dict[str, list[dict[str, Any]]]:
    """Accounts first..last as row dicts, ids given here (bulk inserts, no ORM events)."""
    today = now.date()
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
                "created_at": now,
            }
        )
        out["cont"].append({"account_id": i, "phone_e164": phone(i), "label": "AP"})
        for k in range(rng.randint(1, 4)):
            due = today - dt.timedelta(days=rng.randint(-30, 180))
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
        paid_on = today - dt.timedelta(days=rng.randint(1, 300))
        out["pay"].append(
            {
                "account_id": i,
                "date": paid_on,
                "amount_cents": rng.randint(10, 5000) * 100,
                "reference": f"P{i}",
            }
        )
        started = now - dt.timedelta(days=rng.randint(1, 60))
        out["call"].append(
            {
                "id": i,
                "direction": "outbound",
                "caller": "sip:c",
                "callee": phone(i),
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
            due = today + dt.timedelta(days=rng.randint(-10, 10))
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


def fill(engine: Engine, n: int, seed: int = 7) -> int:
    """Load the portfolio, a block of accounts at a time; returns the number of notes."""
    sessions = make_sessions(engine)
    with sessions.begin() as session:
        if session.scalar(select(Collector.id).where(Collector.name.like("Collector %"))):
            raise PortfolioError("a portfolio is there already (collectors named Collector NN)")
        # Ids follow whatever is there (the small demo data, an import): no clash.
        start = max(session.scalar(select(func.max(t.id))) or 0 for t in (Account, Customer, Call))
        session.add_all(Collector(name=f"Collector {i:02d}") for i in range(COLLECTORS))
    first_collector = _first_collector(sessions)
    tables = dict(zip(KEYS, (Customer, Account, Contact, Invoice, Payment, Call, Note,
                             CallOutcome), strict=True))  # fmt: skip
    rng, notes, now = random.Random(seed), 0, dt.datetime.now(dt.UTC)
    for first in range(start + 1, start + n + 1, BLOCK):
        last = min(start + n, first + BLOCK - 1)
        rows = _rows(first, last, rng, now)
        for row in rows["acct"] + rows["out"]:
            row["collector_id"] += first_collector - 1
        with engine.begin() as conn:
            for key in KEYS:
                if rows[key]:
                    conn.execute(insert(tables[key]), rows[key])
        notes += len(rows["note"])
        print(f"\r  loaded {last - start:,} accounts, {notes:,} notes", end="", flush=True)
    print()
    if engine.dialect.name == "postgresql":  # ids were given explicitly: move the sequences on
        with engine.begin() as conn:
            for table in ("customers", "accounts", "calls"):
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
    return notes


def _first_collector(sessions: Any) -> int:
    with sessions() as session:
        found = session.scalar(select(Collector.id).where(Collector.name == "Collector 00"))
    assert found is not None
    return found
