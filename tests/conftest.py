"""Fixtures shared by unit and integration tests: databases.

- `pg_cluster` (session): one throwaway PostgreSQL cluster for the whole run (tests/pg.py).
- `postgres_url`: a fresh, empty PostgreSQL database per test, dropped afterwards.
- `database_url`: parametrized over sqlite and postgresql, for storage tests that must pass on
  both backends; `db_sessions`: a session factory on it, schema created.

Without PostgreSQL installed the postgresql cases are skipped, except under CI=true where
`make test` installs it, so there they fail instead of silently not running.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tests.pg import PgCluster, PostgresUnavailable, start_postgres


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    try:
        cluster = start_postgres()
    except PostgresUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(pg_cluster: PgCluster) -> Iterator[str]:
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(make_url(url).database or "")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'voice.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def db_sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    from accounts.db import create_schema, make_engine, make_sessions

    engine = make_engine(database_url)
    create_schema(engine)
    yield make_sessions(engine)
    engine.dispose()


@pytest.fixture
def locked_sqlite(tmp_path: Path) -> Iterator[tuple[sessionmaker[Session], sqlite3.Connection]]:
    """A SQLite database with a 50 ms busy timeout, and a second connection to hold its write
    lock (`BEGIN EXCLUSIVE`), as a saturated machine does."""
    from accounts.db import create_schema, make_engine, make_sessions

    path = tmp_path / "voice.db"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=50)
    create_schema(engine)
    holder = sqlite3.connect(path, isolation_level=None, timeout=5)
    yield make_sessions(engine), holder
    holder.close()
    engine.dispose()
