"""The text index of transcripts, and the indexes recording search needs, on SQLite and PostgreSQL.

Words said on a call are found through a real text index, never a `LIKE` scan:
- SQLite: an FTS5 table `transcripts_fts` over `transcripts.text` (external content, so the text
  is stored once), kept in step by triggers on every insert, update and delete of a transcript;
- PostgreSQL: a stored generated column `transcripts.text_tsv` = `to_tsvector('simple', text)`
  with a GIN index, which the server keeps in step itself. Stored, not an expression index:
  the planner costs a recomputed to_tsvector far too low, and walked the newest recordings
  recomputing it per row (430 ms for a first page at 200,000 calls, 22 ms with the column).
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
PG_CONFIG = "'simple'::regconfig"
PG_COLUMN = "text_tsv"
PG_INDEX = "ix_transcripts_tsv"
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
_POSTGRES_COLUMN = (
    f"ALTER TABLE transcripts ADD COLUMN IF NOT EXISTS {PG_COLUMN} tsvector "
    f"GENERATED ALWAYS AS (to_tsvector({PG_CONFIG}, text)) STORED"
)
_POSTGRES_INDEX = f"CREATE INDEX IF NOT EXISTS {PG_INDEX} ON transcripts USING GIN ({PG_COLUMN})"


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
        # ALTER TABLE locks the table even when the column is there: only when it is missing
        # (then it fills the column for every stored row, once).
        has_column = conn.scalar(
            text(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = 'transcripts' AND column_name = :c"
            ),
            {"c": PG_COLUMN},
        )
        if not has_column:
            conn.exec_driver_sql(_POSTGRES_COLUMN)
        conn.exec_driver_sql(_POSTGRES_INDEX)


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
        vector = literal_column(f"transcripts.{PG_COLUMN}")
        query = func.phraseto_tsquery(literal_column(PG_CONFIG), literal(term))
        return vector.op("@@")(query)  # type: ignore[no-any-return]
    if dialect == "sqlite":
        rows = select(_FTS.c.rowid).where(_FTS.c[FTS_TABLE].op("MATCH")(literal(f'"{term}"')))
        return Transcript.id.in_(rows)
    raise ValueError(f"no text index for database {dialect!r}")
