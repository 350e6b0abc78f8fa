"""Notes webhook: a real HTTP server on 127.0.0.1 that fails on demand, an injected clock, the
outbox in SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accounts.call_journal import CallJournal
from accounts.db import create_schema, make_engine, make_sessions
from accounts.models import Account, Customer, Note, WebhookOutbox
from accounts.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Outbox,
    backoff,
    check_signature,
    post_json,
    run_outbox,
    sign,
)
from voice.config import Config, WebhookConfig, from_mapping

SECRET = "s3cret-key"
# The injected clock starts after the notes the tests write (they are queued at real time).
T0 = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)


class Crm:
    """A CRM endpoint: answers `script` statuses in turn (then 200), keeps what it got."""

    def __init__(self) -> None:
        self.script: list[int | str] = []  # a status, or "slow" (answers after 2 s)
        self.received: list[tuple[dict[str, str], bytes]] = []
        crm = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                crm.received.append((dict(self.headers.items()), body))
                step = crm.script.pop(0) if crm.script else 200
                if step == "slow":
                    time.sleep(2.0)
                    step = 200
                if step == 302:
                    self.send_response(302)
                    self.send_header("Location", "/elsewhere")
                    self.end_headers()
                    return
                # The "slow" step answers after the sender gave up: its socket may be gone.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(int(step))
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    self.wfile.write(b"crm says no" if step >= 300 else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/notes"
        self.server.daemon_threads = True  # a "slow" answer still sleeping does not hold close()
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def crm() -> Iterator[Crm]:
    server = Crm()
    yield server
    server.close()


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    create_schema(engine)
    yield make_sessions(engine)
    engine.dispose()


def _cfg(url: str, **kw: Any) -> WebhookConfig:
    return WebhookConfig(url=url, secret=SECRET, backoff_initial=30.0, backoff_max=600.0, **kw)


def _note(sessions: sessionmaker[Session], body: str = "Promised to pay 480.00 Friday") -> int:
    with sessions.begin() as session:
        account = session.scalar(select(Account).where(Account.number == "10042"))
        if account is None:
            customer = Customer(name="Northwind")
            session.add(customer)
            session.flush()
            account = Account(number="10042", customer_id=customer.id)
            session.add(account)
            session.flush()
        note = Note(account_id=account.id, author="dana", kind="manual", body=body)
        session.add(note)
        session.flush()
        return note.id


def _rows(sessions: sessionmaker[Session]) -> list[WebhookOutbox]:
    with sessions() as session:
        return list(session.scalars(select(WebhookOutbox).order_by(WebhookOutbox.id)))


def test_signature_and_backoff() -> None:
    body = b'{"a":1}'
    sig = sign(SECRET, 1_795_000_000, body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    headers = {TIMESTAMP_HEADER: "1795000000", SIGNATURE_HEADER: sig}
    assert check_signature(SECRET, headers, body, now=1_795_000_100)
    assert not check_signature(SECRET, headers, body + b" ", now=1_795_000_100)
    assert not check_signature("other", headers, body, now=1_795_000_100)
    assert not check_signature(SECRET, headers, body, now=1_795_000_000 + 301)  # replayed late
    forged = {**headers, TIMESTAMP_HEADER: "1795000300"}  # fresh stamp, old signature
    assert not check_signature(SECRET, forged, body, now=1_795_000_300)
    assert [backoff(n, 30, 600) for n in range(1, 7)] == [30, 60, 120, 240, 480, 600]
    assert backoff(500, 30, 600) == 600


def test_every_note_queues_a_delivery_in_its_own_transaction(
    sessions: sessionmaker[Session],
) -> None:
    note_id = _note(sessions)
    # Notes the IVR writes at the end of a call queue one too.
    with sessions() as session:
        account_id = session.scalar(select(Account.id))
    journal = CallJournal(sessions)
    call_id = journal.start_call(
        direction="inbound", caller="+12125550101", callee="ivr", worker="w0", sip_call_id="x"
    )
    journal.set_account(call_id, account_id)
    ivr_note = journal.finish_call(call_id, status="completed", end_reason="hangup", summary="s")
    # A rolled-back note leaves no delivery behind.
    with pytest.raises(RuntimeError), sessions.begin() as session:
        session.add(Note(account_id=account_id, author="x", kind="manual", body="gone"))
        session.flush()
        raise RuntimeError("rollback")
    rows = _rows(sessions)
    assert [(r.note_id, r.event, r.attempts) for r in rows] == [
        (note_id, "note.created", 0),
        (ivr_note, "note.created", 0),
    ]
    assert all(r.next_attempt_at is not None and r.delivered_at is None for r in rows)


def test_delivery_is_signed_json(sessions: sessionmaker[Session], crm: Crm) -> None:
    note_id = _note(sessions)
    report = Outbox(sessions, _cfg(crm.url)).deliver_due(T0 + dt.timedelta(minutes=5))
    assert report.delivered == [1]
    [(headers, body)] = crm.received
    assert headers["Content-Type"] == "application/json"
    assert headers[DELIVERY_HEADER] == "1"
    assert headers[TIMESTAMP_HEADER] == str(int(T0.timestamp()) + 300)
    assert check_signature(SECRET, headers, body, now=T0.timestamp() + 300)
    payload = json.loads(body)
    assert payload["event"] == "note.created" and payload["delivery"] == 1
    assert payload["note"]["id"] == note_id
    assert payload["note"]["account"] == "10042"
    assert payload["note"]["body"] == "Promised to pay 480.00 Friday"
    [row] = _rows(sessions)
    assert (row.attempts, row.delivered_at, row.last_error) == (
        1,
        T0 + dt.timedelta(minutes=5),
        None,
    )
    # Delivered once: nothing more to send, ever.
    assert Outbox(sessions, _cfg(crm.url)).deliver_due(T0 + dt.timedelta(days=9)).delivered == []
    assert len(crm.received) == 1


def test_failures_back_off_and_survive_a_restart(
    sessions: sessionmaker[Session], crm: Crm, database_url: str
) -> None:
    _note(sessions)
    crm.script = [500, 503, 302]
    now = dt.datetime.now(dt.UTC)
    outbox = Outbox(sessions, _cfg(crm.url))

    assert outbox.deliver_due(now).retrying == [1]
    [row] = _rows(sessions)
    assert row.attempts == 1 and row.last_error == "HTTP 500 Internal Server Error: crm says no"
    assert row.next_attempt_at == now + dt.timedelta(seconds=30)

    # Not due before its time: nothing is sent.
    assert outbox.deliver_due(now + dt.timedelta(seconds=29)).retrying == []
    assert len(crm.received) == 1

    t2 = now + dt.timedelta(seconds=30)
    assert outbox.deliver_due(t2).retrying == [1]
    assert _rows(sessions)[0].next_attempt_at == t2 + dt.timedelta(seconds=60)

    # "Restart": a new engine and outbox read the same database and carry on.
    engine = make_engine(database_url)
    again = Outbox(make_sessions(engine), _cfg(crm.url))
    t3 = t2 + dt.timedelta(seconds=60)
    assert again.deliver_due(t3).retrying == [1]  # the 302 is not followed
    [row] = _rows(sessions)
    assert row.attempts == 3 and row.last_error is not None and "302" in row.last_error
    t4 = t3 + dt.timedelta(seconds=120)
    assert again.deliver_due(t4).delivered == [1]
    engine.dispose()
    [row] = _rows(sessions)
    assert (row.attempts, row.delivered_at, row.last_error) == (4, t4, None)
    assert len(crm.received) == 4
    # Every attempt carried the same delivery id and a valid signature for its own time.
    assert {h[DELIVERY_HEADER] for h, _ in crm.received} == {"1"}
    for (headers, body), at in zip(crm.received, (now, t2, t3, t4), strict=True):
        assert check_signature(SECRET, headers, body, now=at.timestamp())


def test_gives_up_after_max_attempts_and_can_be_retried(
    sessions: sessionmaker[Session], crm: Crm
) -> None:
    _note(sessions)
    _note(sessions, "second")
    crm.script = [500, 500, 500, 500]
    outbox = Outbox(sessions, _cfg(crm.url, max_attempts=2))
    assert outbox.deliver_due(T0).retrying == [1, 2]
    report = outbox.deliver_due(T0 + dt.timedelta(hours=1))
    assert report.gave_up == [1, 2]
    assert all(r.failed_at is not None and r.next_attempt_at is None for r in _rows(sessions))
    assert outbox.deliver_due(T0 + dt.timedelta(days=30)).gave_up == []
    assert outbox.retry_failed(T0 + dt.timedelta(days=30)) == 2
    assert outbox.deliver_due(T0 + dt.timedelta(days=30)).delivered == [1, 2]


def test_unreachable_and_slow_receivers(sessions: sessionmaker[Session], crm: Crm) -> None:
    _note(sessions)
    dead = Outbox(sessions, _cfg("http://127.0.0.1:9/nothing-listens"))
    assert dead.deliver_due(T0).retrying == [1]
    assert "no answer" in (_rows(sessions)[0].last_error or "")
    crm.script = ["slow"]
    slow = Outbox(sessions, _cfg(crm.url, timeout=0.5))
    began = time.monotonic()
    assert slow.deliver_due(T0 + dt.timedelta(hours=1)).retrying == [1]
    assert time.monotonic() - began < 1.9
    assert "0.5 s" in (_rows(sessions)[0].last_error or "")


def test_a_claimed_delivery_is_not_sent_twice(sessions: sessionmaker[Session], crm: Crm) -> None:
    _note(sessions)
    first, second = Outbox(sessions, _cfg(crm.url)), Outbox(sessions, _cfg(crm.url))
    [row] = first.due(T0)
    assert first._claim(row, T0)
    assert not second._claim(row, T0)  # another process saw the same row as due
    assert second.deliver_due(T0).delivered == []
    assert crm.received == []


def test_without_a_url_nothing_is_sent_and_notes_wait(sessions: sessionmaker[Session]) -> None:
    _note(sessions)
    assert Outbox(sessions, WebhookConfig()).deliver_due(T0).delivered == []
    assert _rows(sessions)[0].attempts == 0


async def test_run_outbox_delivers_until_stopped(
    sessions: sessionmaker[Session], crm: Crm, database_url: str
) -> None:
    base = from_mapping({}, {})
    cfg = dataclasses.replace(
        base,
        database=dataclasses.replace(base.database, url=database_url),
        webhook=dataclasses.replace(_cfg(crm.url), poll_interval=0.1),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_outbox(cfg, stop))
    _note(sessions)
    for _ in range(100):
        if _rows(sessions)[0].delivered_at is not None:
            break
        await asyncio.sleep(0.05)
    assert _rows(sessions)[0].delivered_at is not None
    stop.set()
    await asyncio.wait_for(task, 5)
    # Off (no url): it just waits for the stop.
    stop2 = asyncio.Event()
    idle = asyncio.create_task(run_outbox(Config(), stop2))
    await asyncio.sleep(0.05)
    assert not idle.done()
    stop2.set()
    await asyncio.wait_for(idle, 1)


def test_a_finished_transcript_is_sent_for_its_call_note(
    sessions: sessionmaker[Session], crm: Crm
) -> None:
    journal = CallJournal(sessions)
    _note(sessions)  # creates account 10042
    with sessions() as session:
        account_id = session.scalar(select(Account.id).where(Account.number == "10042"))
    call_id = journal.start_call(
        direction="inbound", caller="+12125550101", callee="ivr", worker="w1", sip_call_id="x"
    )
    assert not journal.transcript_ready(call_id)  # no note yet, nothing said
    journal.set_account(call_id, account_id)
    journal.finish_call(call_id, status="completed", end_reason="caller hung up", summary="s")
    assert not journal.transcript_ready(call_id)  # a note, but no utterance
    words = [{"word": "잔액", "start": 4.1, "end": 4.6, "conf": 0.93}]
    for speaker, start in (("ivr", 0.4), ("caller", 4.0)):
        journal.add_transcript(
            call_id, speaker=speaker, text="잔액", start=start, end=start + 0.7,
            confidence=0.93, words=words,
        )  # fmt: skip
    assert journal.transcript_ready(call_id)
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    report = Outbox(sessions, _cfg(crm.url)).deliver_due(now)
    assert len(report.delivered) == 3  # the manual note, the call note, its transcript
    events = [json.loads(body) for _, body in crm.received]
    [sent] = [e for e in events if e["event"] == "note.transcript"]
    assert sent["note"]["call_id"] == call_id and sent["note"]["kind"] == "call"
    assert [(u["speaker"], u["start"]) for u in sent["transcript"]] == [
        ("ivr", 0.4),
        ("caller", 4.0),
    ]
    assert sent["transcript"][1]["words"] == words
    assert sent["transcript"][1]["confidence"] == 0.93


def test_a_delivery_sent_while_the_database_locks_is_marked_once_it_frees(
    tmp_path: Path, crm: Crm
) -> None:
    # The receiver answers, then SQLite's write lock is held for a second by another process:
    # the "delivered" mark waits it out instead of failing, so the row is never sent again.
    path = tmp_path / "voice.db"
    engine = make_engine(f"sqlite:///{path}", busy_timeout_ms=50)
    create_schema(engine)
    sessions = make_sessions(engine)
    _note(sessions)
    # The timer thread releases the lock the test's thread took.
    holder = sqlite3.connect(path, isolation_level=None, timeout=5, check_same_thread=False)
    released = threading.Event()

    def post_then_lock(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> None:
        post_json(url, body, headers, timeout)
        holder.execute("BEGIN EXCLUSIVE")
        threading.Timer(1.0, lambda: (holder.execute("COMMIT"), released.set())).start()

    try:
        report = Outbox(sessions, _cfg(crm.url), transport=post_then_lock).deliver_due(T0)
        assert released.is_set()  # the mark was made after the lock went
        assert report.delivered and len(crm.received) == 1
        [row] = _rows(sessions)
        assert row.delivered_at is not None and row.attempts == 1
        later = T0 + dt.timedelta(hours=1)
        assert Outbox(sessions, _cfg(crm.url)).deliver_due(later).delivered == []
        assert len(crm.received) == 1
    finally:
        holder.close()
        engine.dispose()
