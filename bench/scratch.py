"""A throwaway database for a bench run, and the --database choice the benches share."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine

from accounts.db import make_engine

DATABASES = ("sqlite", "postgresql")


@contextlib.contextmanager
def scratch_engine(database: str, prefix: str) -> Iterator[Engine]:
    """A fresh, empty database: SQLite in a temporary folder, or PostgreSQL from tests/pg.py
    (a cluster of its own, stopped afterwards)."""
    cluster = None
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    if database == "postgresql":
        from tests.pg import start_postgres

        cluster = start_postgres()
        url = cluster.url
    else:
        url = f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        if cluster is not None:
            cluster.stop()
        tmp.cleanup()


def add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", choices=(*DATABASES, "both"), default="both")


def chosen(args: argparse.Namespace) -> tuple[str, ...]:
    return DATABASES if args.database == "both" else (args.database,)
