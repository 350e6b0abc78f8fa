"""Engine and schema behaviour that must hold on SQLite and on PostgreSQL alike."""

import datetime as dt
import threading
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, insert, inspect, select, text

from accounts.db import create_schema, make_engine, make_sessions
from accounts.models import Base, Call, Transcript
from accounts.textindex import FTS_TABLE as FTS

PROCESSES = 8  # workers starting at once, each with its own engine (connection pool)


def test_create_schema_concurrently(database_url: str) -> None:
    engines = [make_engine(database_url) for _ in range(PROCESSES)]
    for engine in engines:  # connect first so the barrier lines up the DDL, not the logins
        with engine.connect():
            pass
    barrier = threading.Barrier(PROCESSES)
    errors: list[Exception] = []

    def start(engine: Engine) -> None:
        barrier.wait()
        try:
            create_schema(engine)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        # Plus, on SQLite, the FTS5 table of transcripts and its shadow tables (textindex.py).
        tables = {t for t in inspect(engines[0]).get_table_names() if not t.startswith(FTS)}
        assert tables == set(Base.metadata.tables)
        create_schema(engines[0])  # and again, with everything in place
    finally:
        for engine in engines:
            engine.dispose()


def test_timestamps_are_utc_instants(database_url: str) -> None:
    engine = make_engine(database_url)
    create_schema(engine)
    sessions = make_sessions(engine)
    # The test PostgreSQL runs with timezone America/New_York; a local-time value must come
    # back as the same instant, in UTC.
    started = dt.datetime(2024, 7, 1, 20, 30, 15, 123456, tzinfo=ZoneInfo("America/Chicago"))
    try:
        with sessions.begin() as session:
            call = Call(direction="inbound", worker="w", sip_call_id="x", started_at=started)
            session.add(call)
            session.flush()
            call_id = call.id
        with sessions() as session:
            stored = session.get(Call, call_id)
            assert stored is not None
            assert stored.started_at == started
            assert stored.started_at.tzinfo == dt.UTC
            assert (stored.started_at.day, stored.started_at.hour) == (2, 1)
            later = session.scalar(select(Call.id).where(Call.started_at > started))
            assert later is None
    finally:
        engine.dispose()


def test_postgres_fixture_gives_each_test_its_own_database(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert inspect(conn).get_table_names() == []
            assert conn.execute(text("SHOW max_connections")).scalar() == "300"
    finally:
        engine.dispose()


def test_a_database_made_before_transcripts_had_a_source_gets_it(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        create_schema(engine)
        with engine.begin() as conn:  # as an older version left it: no source column, one row
            conn.execute(text("ALTER TABLE transcripts DROP COLUMN source"))
            call = conn.execute(
                insert(Call.__table__).values(
                    direction="inbound",
                    worker="w",
                    sip_call_id="s",
                    started_at=dt.datetime.now(dt.UTC),
                )  # fmt: skip
            ).inserted_primary_key[0]
            conn.execute(text("INSERT INTO transcripts (call_id, speaker, text, words, created_at)"
                              " VALUES (:c, 'caller', 'x', '[]', :t)"),
                         {"c": call, "t": dt.datetime.now(dt.UTC)})  # fmt: skip
        create_schema(engine)
        create_schema(engine)  # idempotent
        with make_sessions(engine)() as session:
            [row] = session.scalars(select(Transcript))
            assert row.source == "live"  # the old row: recognised live, as all were then
    finally:
        engine.dispose()
