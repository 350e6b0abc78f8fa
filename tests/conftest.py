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
