"""Engine and session factories shared by the voice workers, the web UI and the importer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from accounts import (
    transcription,  # noqa: F401  (the after-call transcription jobs, on Base)
    verification,  # noqa: F401  (its tables join Base's metadata)
    webtables,  # noqa: F401  (the pages' tables, on Base)
)
from accounts.models import ADDED_COLUMNS, Base
from accounts.textindex import ensure as ensure_text_index


def make_engine(url: str, busy_timeout_ms: int = 5000) -> Engine:
    """Create an engine; SQLite gets the settings needed for several writer processes."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # Server databases drop idle connections; pre-ping avoids failing the first query after.
        return create_engine(url, pool_pre_ping=True)

    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)

    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # Pragmas are per connection, so they are set on every new one, not once per file.
        # WAL lets readers proceed while one process writes; busy_timeout makes a writer wait
        # for the lock instead of failing at once; SQLite leaves foreign keys off by default.
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    return engine


# Advisory lock id for schema creation; any constant works if every process uses the same one.
SCHEMA_LOCK_KEY = int.from_bytes(b"voice-db", "big")


def create_schema(engine: Engine) -> None:
    """Create missing tables; safe when several processes call it at the same moment.

    create_all checks for each table, then creates it: two callers can both find it missing and
    the second fails ("already exists"; on PostgreSQL a duplicate key in pg_type). A lock held
    across the whole of create_all makes later callers wait and then find the tables there.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Transaction-scoped: released by the commit that makes the new tables visible.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        elif conn.dialect.name == "sqlite":
            # Take the write lock before the first check (waiting up to busy_timeout for it).
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        Base.metadata.create_all(conn)
        add_missing_columns(conn)
        # Triggers, the FTS table and indexes added since a database was made (accounts/textindex).
        ensure_text_index(conn)
        conn.commit()


def add_missing_columns(conn: Connection) -> None:
    """ALTER TABLE ... ADD COLUMN for each of ADDED_COLUMNS a database made before it lacks."""
    for column in ADDED_COLUMNS:
        table = column.table.name
        if column.name in {c["name"] for c in inspect(conn).get_columns(table)}:
            continue
        kind = column.type.compile(conn.dialect)
        default = column.server_default.arg  # type: ignore[union-attr]
        conn.exec_driver_sql(
            f"ALTER TABLE {table} ADD COLUMN {column.name} {kind} NOT NULL DEFAULT '{default}'"
        )


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    # Results are handed out after the session closes, so loaded attributes must stay readable.
    return sessionmaker(engine, expire_on_commit=False)
