"""A call while the database refuses every write: SQLite's write lock held by another process.

Before the write-behind (accounts/write_behind.py) each event the call wrote waited out the
busy timeout, was retried, then skipped: the caller sat in silence after pressing a key, and on
a saturated machine calls ended with "database is locked". Now the caller hears the answer at
once and every write lands when the lock is released.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import soundfile
from sqlalchemy import select

from accounts.models import Call, Note, Recording
from tests.integration.audio import match_pieces
from tests.integration.conftest import (
    TEST_TTS,
    events_of,
    start_server,
    start_ua,
    stop_server,
    wait_for,
)
from tests.integration.fleet import fleet_env
from voice.ivr.clips import ClipLibrary
from voice.ivr.inbound import balance_answer

pytestmark = pytest.mark.integration

KNOWN = "+12125550101"  # demo account 10042
LOCK_S = 12.0  # longer than the whole menu and answer: every write of the call meets the lock


def test_a_call_goes_on_while_sqlite_is_locked_and_its_writes_land_after(tmp_path: Path) -> None:
    server = start_server(tmp_path / "voice", {"VOICE_DATABASE_BUSY_TIMEOUT_MS": "200"})
    holder = sqlite3.connect(server.data_dir / "voice.db", isolation_level=None, timeout=10)
    try:
        ua = start_ua(server, "audio;wait:2;dtmf:1;audio;wait:14;hangup", tmp_path / "ua.log",
                      caller=KNOWN, record=tmp_path / "heard")  # fmt: skip

        def answered() -> int | None:
            with server.session() as session:
                call = session.scalars(select(Call).where(Call.caller == KNOWN)).first()
                return call.id if call is not None and call.answered_at is not None else None

        call_id = wait_for(answered, 20)
        assert call_id, server.log()[-3000:]
        holder.execute("BEGIN EXCLUSIVE")  # readers go on (WAL); no write can
        locked_at = time.monotonic()
        time.sleep(LOCK_S)
        with server.session() as session:  # nothing of the menu could be written meanwhile
            assert session.get(Call, call_id).status == "in_progress"  # type: ignore[union-attr]
        holder.execute("COMMIT")
        held = time.monotonic() - locked_at
        ua.wait(timeout=60)
    finally:
        holder.close()
        stop_server(server)
    assert held >= LOCK_S
    [report] = [json.loads(x) for x in (tmp_path / "ua.log").read_text().splitlines()
                if x.startswith("{")]  # fmt: skip
    assert not report["error"], report

    # The caller heard the balance while no write could be made.
    ledger = server.ledger()
    account = ledger.account_by_number("10042")
    assert account is not None
    heard, _ = soundfile.read(report["record"], dtype="int16")
    clips = ClipLibrary(TEST_TTS, server.data_dir / "cache" / "tts",
                        server.data_dir / "prompts", "Acme Receivables")  # fmt: skip
    expected = clips.render(balance_answer(ledger.balance(account.id, dt.date.today()))[0])
    scores, _, offset = match_pieces(heard, expected)
    assert scores and min(scores) > 0.6, f"balance answer not heard (pieces {scores})"
    said_at = next(t for t, kind, _ in report["events"] if kind == "dtmf")
    assert offset / 16000 - said_at < 3.0, (said_at, offset)  # answered, not stalled on the db

    # Everything the call wrote while locked landed afterwards, in order.
    kinds = [k for k, _ in events_of(server, call_id)]
    assert kinds[:3] == ["prompt", "lookup", "identified"], kinds
    assert ("choice", {"key": "1", "option": "balance"}) in events_of(server, call_id)
    with server.session() as session:
        call = session.get(Call, call_id)
        assert call is not None and call.status == "completed", call
        note = session.scalars(select(Note.body).where(Note.call_id == call_id)).first()
    assert note and "balance: open" in note and "Ended: caller hung up." in note, note
    log = server.log()
    assert "call writes wait for the database" in log  # the lock was met, and waited out
    assert "not written" not in log and "dropped" not in log, log[-3000:]


def test_a_call_that_comes_while_sqlite_is_locked_is_greeted_and_answered_at_once(
    tmp_path: Path,
) -> None:
    # A call's own row and its recording's were written before the greeting, each waiting out
    # the lock with retries (~20 s): a caller who called while SQLite was locked heard
    # silence, and hung up before the recorder started. Their ids are reserved ahead now
    # (accounts/idblocks.py) and the rows go behind the call like its other writes.
    server = start_server(tmp_path / "voice", {"VOICE_DATABASE_BUSY_TIMEOUT_MS": "200"})
    holder = sqlite3.connect(server.data_dir / "voice.db", isolation_level=None, timeout=10)
    try:

        def reserved() -> int:  # the worker's first block, taken when it started
            row = holder.execute("SELECT seq FROM sqlite_sequence WHERE name = 'recordings'")
            return (row.fetchone() or (0,))[0]

        assert wait_for(reserved, 20), server.log()[-3000:]
        holder.execute("BEGIN EXCLUSIVE")  # before the call: not one of its rows can be written
        ua = start_ua(server, "audio;wait:1;dtmf:1;audio;wait:14;hangup", tmp_path / "ua.log",
                      caller=KNOWN, record=tmp_path / "heard")  # fmt: skip
        ua.wait(timeout=60)  # the whole call under the lock
        with server.session() as session:  # the call has ended; none of it is in yet
            assert session.scalars(select(Call).where(Call.caller == KNOWN)).first() is None
        time.sleep(1.0)  # the call's last writes meet the lock too
        holder.execute("COMMIT")

        def closed() -> Call | None:
            with server.session() as session:
                call = session.scalars(select(Call).where(Call.caller == KNOWN)).first()
                return call if call is not None and call.status == "completed" else None

        call = wait_for(closed, 30)
        assert call, server.log()[-3000:]
        recording = wait_for(lambda: _final_recording(server, call.id), 30)
    finally:
        holder.close()
        stop_server(server)
    [report] = [json.loads(x) for x in (tmp_path / "ua.log").read_text().splitlines()
                if x.startswith("{")]  # fmt: skip
    assert not report["error"], report

    # Greeted and answered while nothing could be written.
    heard, _ = soundfile.read(report["record"], dtype="int16")
    clips = ClipLibrary(TEST_TTS, server.data_dir / "cache" / "tts",
                        server.data_dir / "prompts", "Acme Receivables")  # fmt: skip
    ledger = server.ledger()
    account = ledger.account_by_number("10042")
    assert account is not None
    expected = clips.render(balance_answer(ledger.balance(account.id, dt.date.today()))[0])
    scores, _, offset = match_pieces(heard, expected)
    assert scores and min(scores) > 0.6, f"balance answer not heard (pieces {scores})"
    said_at = next(t for t, kind, _ in report["events"] if kind == "dtmf")
    assert offset / 16000 - said_at < 3.0, (said_at, offset)

    # And all of it landed after: the call, its events, its note, its whole recording.
    kinds = [k for k, _ in events_of(server, call.id)]
    assert kinds[:3] == ["prompt", "lookup", "identified"], kinds
    assert recording, "the call's recording was not finalised"
    assert recording.sha256 and not recording.loss and (recording.duration_s or 0) > 6, recording
    with server.session() as session:
        note = session.scalars(select(Note.body).where(Note.call_id == call.id)).first()
    assert note and "balance: open" in note and f"Recording {recording.id}" in note, note
    log = server.log()
    assert "call writes wait for the database" in log
    assert "not written" not in log and "dropped" not in log, log[-3000:]


def _final_recording(server: Any, call_id: int, final: str = "final") -> Recording | None:
    """The call's recording once its status is `final` (the finalised status expected)."""
    with server.session() as session:
        rec = session.scalars(select(Recording).where(Recording.call_id == call_id)).first()
        return rec if rec is not None and rec.status == final else None


def test_a_worker_killed_while_the_database_is_locked_is_restarted_and_its_call_closed(
    tmp_path: Path,
) -> None:
    # The supervisor closes a dead worker's calls before restarting it. When that write met a
    # locked database it raised inside the task that follows the zygote, which then ended:
    # the worker was never restarted, nor any worker after it (found by bench/soak.py).
    server = start_server(tmp_path / "voice", fleet_env(2, VOICE_DATABASE_BUSY_TIMEOUT_MS="200"))
    holder = sqlite3.connect(server.data_dir / "voice.db", isolation_level=None, timeout=10)
    ua = None
    try:
        ua = start_ua(server, "audio;wait:30;hangup", tmp_path / "ua.log", caller=KNOWN)
        busy = wait_for(lambda: [w for w in server.health()["workers"] if w["calls"]], 20)
        assert busy, server.health()
        [victim] = busy

        def call_row() -> int | None:  # the worker counts the call before its row is committed
            with server.session() as session:
                return session.scalars(select(Call.id).where(Call.caller == KNOWN)).one_or_none()

        call_id = wait_for(call_row, 10)
        assert call_id, server.log()[-3000:]
        holder.execute("BEGIN EXCLUSIVE")
        os.kill(victim["pid"], signal.SIGKILL)
        time.sleep(3.0)  # the supervisor meets the lock (200 ms busy timeout) and retries
        holder.execute("COMMIT")

        def restarted() -> dict | None:
            worker = next(w for w in server.health()["workers"] if w["name"] == victim["name"])
            return worker if worker["restarts"] == 1 and worker["pid"] != victim["pid"] else None

        assert wait_for(restarted, 30), (server.health(), server.log()[-3000:])
        with server.session() as session:
            call = session.get(Call, call_id)
            assert call is not None and call.status == "interrupted", call
            assert "killed by signal 9" in (call.end_reason or "")
        # And the supervisor still follows its workers: a second death is seen too.
        again = next(w for w in server.health()["workers"] if w["name"] == victim["name"])
        os.kill(again["pid"], signal.SIGKILL)
        assert wait_for(
            lambda: next(w for w in server.health()["workers"]
                         if w["name"] == victim["name"])["restarts"] == 2, 30,
        ), server.health()  # fmt: skip
    finally:
        holder.close()
        if ua is not None and ua.poll() is None:
            ua.kill()
            ua.wait()
        stop_server(server)


def test_a_call_whose_rows_were_only_in_the_killed_worker_s_spool_is_closed_on_restart(
    tmp_path: Path,
) -> None:
    # The call started under the lock, so the supervisor, closing the dead worker's calls,
    # finds none: its rows are in the worker's spool. The restarted worker writes them and
    # closes the call as interrupted, its recording repaired from the WAV on disk.
    server = start_server(tmp_path / "voice", fleet_env(2, VOICE_DATABASE_BUSY_TIMEOUT_MS="200"))
    holder = sqlite3.connect(server.data_dir / "voice.db", isolation_level=None, timeout=10)
    ua = None
    try:
        seq = "SELECT seq FROM sqlite_sequence WHERE name = 'recordings'"
        assert wait_for(lambda: (holder.execute(seq).fetchone() or (0,))[0] >= 16, 30)
        holder.execute("BEGIN EXCLUSIVE")
        ua = start_ua(server, "audio;wait:1;dtmf:1;wait:30;hangup", tmp_path / "ua.log",
                      caller=KNOWN)  # fmt: skip
        busy = wait_for(lambda: [w for w in server.health()["workers"] if w["calls"]], 20)
        assert busy, server.health()
        [victim] = busy
        time.sleep(5.0)  # greeted, key pressed, recording: all of it waits in the spool
        os.kill(victim["pid"], signal.SIGKILL)
        time.sleep(2.0)
        holder.execute("COMMIT")

        def closed() -> Call | None:
            with server.session() as session:
                call = session.scalars(select(Call).where(Call.caller == KNOWN)).first()
                return call if call is not None and call.status != "in_progress" else None

        call = wait_for(closed, 40)
        assert call, server.log()[-3000:]
        recording = wait_for(lambda: _final_recording(server, call.id, "interrupted"), 20)
    finally:
        holder.close()
        if ua is not None and ua.poll() is None:
            ua.kill()
            ua.wait()
        stop_server(server)
    assert call.status == "interrupted" and "its writes kept" in (call.end_reason or ""), call
    assert call.worker == victim["name"]
    assert ("choice", {"key": "1", "option": "balance"}) in events_of(server, call.id)
    assert recording and recording.status == "interrupted" and recording.sha256, recording
    assert (recording.duration_s or 0) > 3.0, recording
    assert "from the spool marked interrupted" in server.log()
