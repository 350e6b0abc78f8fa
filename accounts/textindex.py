"""The text index of transcripts, and the indexes recording search needs, on SQLite and PostgreSQL.

Words said on a call are found through a real text index, never a `LIKE` scan:
- SQLite: an FTS5 table `transcripts_fts` over `transcripts.text` (external content, so the text
  is stored once), kept in step by triggers on every insert, update and delete of a transcript;
- PostgreSQL: a GIN index on `to_tsvector('simple', text)`, which the server keeps in step itself.
Both tokenise on letters and digits, lower-case, no stemming and no accent folding (`simple`;
`unicode61 remove_diacritics 0`), so one query finds the same calls on either database.

`create_schema` (accounts/db.py) calls `ensure(conn)` after `create_all`, under the schema lock,
every time: everything here is `IF NOT EXISTS`, so a database made before the index existed gets
it (and an FTS table filled from the rows already there) at its next start.
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, Index, column, func, literal, literal_column, select, table, text
from sqlalchemy.sql.elements import ColumnElement

from accounts.models import Call, Recording, Transcript

FTS_TABLE = "transcripts_fts"
# `text` is an expression in the index: a query must spell it exactly so for the planner to use it.
PG_CONFIG = "'simple'::regconfig"
PG_INDEX = "ix_transcripts_text_tsv"
# What a searchable term is on both sides: a run of letters or digits (no underscore).
TERM = re.compile(r"[^\W_]+")

# Search by phone (caller or callee), and newest first over everything (recordings/search.py).
SEARCH_INDEXES = (
    Index("ix_calls_caller", Call.caller),
    Index("ix_calls_callee", Call.callee),
    Index("ix_recordings_started", Recording.started_at, Recording.id),
)

# The FTS5 table as a query sees it: its rowid (a transcript id) and its MATCH column.
_FTS = table(FTS_TABLE, column("rowid"), column(FTS_TABLE))

_SQLITE = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(text, content='transcripts', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 0')",
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ai AFTER INSERT ON transcripts BEGIN "
    f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END",
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_ad AFTER DELETE ON transcripts BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); END",
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_au AFTER UPDATE OF text ON transcripts BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, text) VALUES ('delete', old.id, old.text); "
    f"INSERT INTO {FTS_TABLE}(rowid, text) VALUES (new.id, new.text); END",
)
_POSTGRES = (
    f"CREATE INDEX IF NOT EXISTS {PG_INDEX} ON transcripts "
    f"USING GIN (to_tsvector({PG_CONFIG}, text))",
)


def ensure(conn: Connection) -> None:
    """Create the text index and the search indexes where missing (idempotent)."""
    for index in SEARCH_INDEXES:
        index.create(conn, checkfirst=True)
    if conn.dialect.name == "sqlite":
        had = conn.scalar(
            text("SELECT count(*) FROM sqlite_master WHERE name = :n"), {"n": FTS_TABLE}
        )
        for ddl in _SQLITE:
            conn.exec_driver_sql(ddl)
        if not had:  # transcripts stored before the index existed
            conn.exec_driver_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('rebuild')")
    elif conn.dialect.name == "postgresql":
        for ddl in _POSTGRES:
            conn.exec_driver_sql(ddl)


def terms(words: str) -> list[str]:
    """The searchable terms of `words`, lower-cased, in order."""
    return TERM.findall(words.lower())


def said_in(dialect: str, term: str) -> ColumnElement[bool]:
    """`Transcript` rows whose text has `term` (one of `terms()`), through the text index.

    `term` is always a bound parameter; on SQLite it is wrapped as an FTS5 phrase ("term"),
    which is safe because a term is letters and digits only."""
    if not TERM.fullmatch(term) or term != term.lower():
        raise ValueError(f"not a search term: {term!r}")
    if dialect == "postgresql":
        config = literal_column(PG_CONFIG)
        vector = func.to_tsvector(config, Transcript.text)
        return vector.op("@@")(func.phraseto_tsquery(config, literal(term)))  # type: ignore[no-any-return]
    if dialect == "sqlite":
        rows = select(_FTS.c.rowid).where(_FTS.c[FTS_TABLE].op("MATCH")(literal(f'"{term}"')))
        return Transcript.id.in_(rows)
    raise ValueError(f"no text index for database {dialect!r}")
