"""Row ids reserved ahead, a few at a time, so a new call's rows can be written behind it.

A call's first rows (the call, its recording) were the two writes a caller waited for before
hearing the greeting: everything after them refers to their ids. With ids taken from a block
this worker reserved earlier, the rows go to the write-behind (accounts/write_behind.py) like
every other call write, and the call starts at once whatever the database does.

Reserving a block is one short write, made in the background while the worker still holds
ids. PostgreSQL: `nextval` of the table's sequence, n times. SQLite: the table must be
`AUTOINCREMENT` (calltables.py asks for it), so its high-water mark in `sqlite_sequence`
can be moved up by n inside `BEGIN IMMEDIATE`, and no other insert ever takes an id below it.
A database made before that (no AUTOINCREMENT) reserves nothing: its calls write their first
rows now, as before. Ids left in a block when a worker stops are not used: gaps, as a
PostgreSQL sequence leaves.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from accounts.retry import DB_ERRORS

log = logging.getLogger(__name__)

TABLES = ("calls", "recordings")
# Ids reserved at once, and the level that starts the next refill. A worker takes about 12
# calls a minute; a block of 32 lasts minutes, and the refill has 16 calls' time to get past a
# busy SQLite (the 30-minute soak, 2026-12-04: blocks of 8 ran dry 205 times).
BLOCK = 32
LOW = 16


def reserve(conn: Connection, table: str, count: int) -> list[int]:
    """`count` ids of `table` no insert will take; [] when this database cannot reserve."""
    if table not in TABLES:  # the name goes into SQL text: only ours
        raise ValueError(f"no id blocks for {table!r}")
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table, "n": count},
        )
        return sorted(int(r[0]) for r in rows)
    if conn.dialect.name != "sqlite":
        return []
    ddl = conn.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :t"), {"t": table}
    ).scalar()
    if not ddl or "AUTOINCREMENT" not in ddl.upper():
        return []  # ids are max(id) + 1: a reserved one could be taken by the next insert
    # The high-water mark is at least every id ever used; a table never inserted into has no
    # row in sqlite_sequence yet.
    seq = conn.execute(text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table})
    high = seq.scalar()
    top = conn.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar() or 0
    start = max(int(high or 0), int(top))
    if high is None:
        conn.execute(
            text("INSERT INTO sqlite_sequence (name, seq) VALUES (:t, :s)"),
            {"t": table, "s": start + count},
        )
    else:
        conn.execute(
            text("UPDATE sqlite_sequence SET seq = :s WHERE name = :t"),
            {"t": table, "s": start + count},
        )
    return list(range(start + 1, start + count + 1))


class IdBlocks:
    """One worker's reserved ids per table: `take` never touches the database."""

    def __init__(self, sessions: sessionmaker[Session], block: int = BLOCK) -> None:
        self._sessions = sessions
        self._block = block
        self._ids: dict[str, collections.deque[int]] = {t: collections.deque() for t in TABLES}
        self._refill: asyncio.Task[None] | None = None
        self.supported = True  # False once the database said it cannot reserve

    def take(self, table: str) -> int | None:
        """A reserved id of `table`, or None (none left: write the row now, the old way)."""
        ids = self._ids[table]
        taken = ids.popleft() if ids else None
        if len(ids) < LOW:
            self.refill_soon()
        return taken

    async def take_waiting(self, table: str, tries: int = 3) -> int | None:
        """`take`, waiting for a refill when none is left (up to `tries` refills): for a row
        that must go behind rows already handed over, such as a recording behind its call's
        row. None when the database gave none."""
        for _ in range(tries):
            taken = self.take(table)  # starts a refill when low
            if taken is not None or not self.supported or self._refill is None:
                return taken
            await asyncio.shield(self._refill)  # a refusal is logged there, not raised
        return self.take(table)

    def left(self, table: str) -> int:
        return len(self._ids[table])

    def refill_soon(self) -> None:
        """Reserve more in the background (one refill at a time); needs a running loop."""
        if not self.supported or (self._refill is not None and not self._refill.done()):
            return
        self._refill = asyncio.get_running_loop().create_task(self.refill())

    async def refill(self) -> None:
        """Top every table up to a block; a refusal (the database is locked) is tried again at
        the next `take`."""
        wanted = {t: self._block - len(ids) for t, ids in self._ids.items() if len(ids) < LOW}
        if not wanted:
            return
        try:
            got = await asyncio.to_thread(self._reserve, wanted)
        except DB_ERRORS as exc:
            log.info("no id block reserved now (%s): calls write their first rows directly", exc)
            return
        for table, ids in got.items():
            self._ids[table].extend(ids)
        if wanted and not any(got.values()):
            self.supported = False
            log.warning(
                "this database cannot reserve ids (a SQLite file made before AUTOINCREMENT): "
                "each call writes its first rows before it starts"
            )

    def _reserve(self, wanted: dict[str, int]) -> dict[str, list[int]]:
        with self._sessions() as session:
            conn = session.connection()
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # read and move the mark under the lock
            got = {table: reserve(conn, table, count) for table, count in wanted.items()}
            session.commit()
        return got
