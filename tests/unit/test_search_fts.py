"""Transcript words go through the text index (SQLite FTS5, PostgreSQL GIN), on both databases.

The index is kept in step by the database as utterances are stored (CallJournal.add_transcript,
what the live transcriber calls), changed or removed; a database made before the index existed
gets it, filled, from create_schema; the search's SQL uses the index, never LIKE.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.engine import Engine

from accounts import textindex
from accounts.call_journal import CallJournal
from accounts.db import create_schema, make_engine, make_sessions
from accounts.models import Base, Call, Transcript
from recordings.search import RecordingFilter, RecordingSearch, Scope
from tests.unit.recdata import T0, World, build_world


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    yield from build_world(database_url, tmp_path / "recordings")


def _find(world: World, words: str) -> list[int]:
    found = RecordingSearch(world.sessions).search(RecordingFilter(words=words), Scope.all())
    return [r.call_id for r in found]


def _utter(world: World, call_id: int, words: str, speaker: str = "caller") -> int:
    return CallJournal(world.sessions).add_transcript(
        call_id, speaker=speaker, text=words, start=0.0, end=1.0, confidence=0.9, words=[]
    )


def _recorded_call(world: World, days: int = 0) -> int:
    call_id = world.call(started_at=T0 + dt.timedelta(days=days))
    world.recording(call_id, started_at=T0 + dt.timedelta(days=days), with_file=False)
    return call_id


def test_the_index_follows_every_stored_change(world: World) -> None:
    first, second = _recorded_call(world), _recorded_call(world, 1)
    row = _utter(world, first, "I already paid the invoice")
    _utter(world, second, "Paid? Not yet, sorry", speaker="agent")
    assert _find(world, "paid") == [second, first]  # newest first
    assert _find(world, "PAID invoice") == [first]
    assert _find(world, "pai") == []  # whole words, not substrings
    with world.sessions.begin() as session:
        session.execute(update(Transcript).where(Transcript.id == row).values(text="a dispute"))
    assert _find(world, "invoice") == []
    assert _find(world, "dispute") == [first]
    with world.sessions.begin() as session:
        session.query(Transcript).filter(Transcript.id == row).delete()
    assert _find(world, "dispute") == []
    assert _find(world, "paid") == [second]


def test_words_in_other_scripts_and_accents_match_the_same_on_both(world: World) -> None:
    korean, french = _recorded_call(world), _recorded_call(world, 1)
    _utter(world, korean, "잔액 알려 주세요")
    _utter(world, french, "Le reçu est déjà envoyé")
    assert _find(world, "잔액") == [korean]
    assert _find(world, "déjà REÇU") == [french]
    assert _find(world, "deja") == []  # no accent folding on either database


def _statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", capture)
    return seen


def test_the_search_sql_uses_the_text_index_not_like(world: World) -> None:
    call_id = _recorded_call(world)
    _utter(world, call_id, "promise to pay on friday")
    engine = world.sessions.kw["bind"]
    seen = _statements(engine)
    assert _find(world, "friday pay") == [call_id]
    search_sql = next(s for s in seen if "recordings" in s and "transcripts" in s)
    assert "LIKE" not in search_sql.upper()
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            assert "transcripts_fts MATCH" in search_sql
            plan = conn.execute(
                text(
                    "EXPLAIN QUERY PLAN SELECT rowid FROM transcripts_fts WHERE "
                    "transcripts_fts MATCH :q"
                ),
                {"q": '"friday"'},
            ).all()
            assert any("VIRTUAL TABLE INDEX" in str(row[-1]) for row in plan), plan
        else:
            assert "transcripts.text_tsv @@ phraseto_tsquery('simple'::regconfig" in search_sql
            conn.exec_driver_sql("SET enable_seqscan = off")  # a tiny table: force the choice
            plan = (
                conn.execute(
                    text(
                        "EXPLAIN SELECT id FROM transcripts WHERE "
                        "text_tsv @@ phraseto_tsquery('simple'::regconfig, :q)"
                    ),
                    {"q": "friday"},
                )
                .scalars()
                .all()
            )
            assert any(textindex.PG_INDEX in line for line in plan), plan


def test_a_database_made_before_the_index_gets_it_filled(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        Base.metadata.create_all(engine)  # as an older version made it: no text index
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS {textindex.PG_INDEX}")
                conn.exec_driver_sql(
                    f"ALTER TABLE transcripts DROP COLUMN IF EXISTS {textindex.PG_COLUMN}"
                )
            for index in textindex.SEARCH_INDEXES:
                index.drop(conn, checkfirst=True)
        sessions = make_sessions(engine)
        with sessions.begin() as session:
            call = Call(direction="inbound", caller="+12125550101", worker="w0", sip_call_id="x")
            session.add(call)
            session.flush()
            session.add(Transcript(call_id=call.id, speaker="caller", text="stored long ago"))
        create_schema(engine)
        create_schema(engine)  # and again: nothing doubled, nothing fails
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                hits = conn.execute(
                    text("SELECT rowid FROM transcripts_fts WHERE transcripts_fts MATCH :q"),
                    {"q": '"ago"'},
                ).all()
                assert len(hits) == 1
            else:
                names = conn.execute(text("SELECT indexname FROM pg_indexes")).scalars().all()
                assert textindex.PG_INDEX in names
                hits = conn.execute(
                    text(f"SELECT id FROM transcripts WHERE {textindex.PG_COLUMN} @@ 'ago'")
                ).all()
                assert len(hits) == 1  # filled for the rows already there
            for index in textindex.SEARCH_INDEXES:
                assert index.name in _index_names(conn)
    finally:
        engine.dispose()


def _index_names(conn: Any) -> set[str]:
    from sqlalchemy import inspect

    inspector = inspect(conn)
    return {ix["name"] for table in ("calls", "recordings") for ix in inspector.get_indexes(table)}


def test_terms_are_letters_and_digits() -> None:
    assert textindex.terms("Invoice_Number 100% invoice, ok?") == [
        "invoice",
        "number",
        "100",
        "invoice",
        "ok",
    ]
    assert textindex.terms("% _ --") == []
    with pytest.raises(ValueError, match="not a search term"):
        textindex.said_in("sqlite", 'x" OR "y')
