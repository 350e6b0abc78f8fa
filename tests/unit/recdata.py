"""Seeded recordings for the recordings tests: real FLAC files on disk, real database rows.

Accounts: 10042 (collector Dana, contact +12125550101), 20001 (Marcus), and calls without an
account. Each recording's file is a short tone written with soundfile, its SHA-256 stored the
way the recorder stores it at finalisation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from sqlalchemy.orm import Session, sessionmaker

from accounts.db import create_schema, make_engine, make_sessions
from accounts.models import Account, Call, Collector, Customer, Recording, Transcript
from recordings.paths import relative_path

RATE = 16000
T0 = dt.datetime(2026, 3, 10, 14, 30, tzinfo=dt.UTC)


def write_flac(path: Path, seconds: float = 0.5, freq: float = 440.0) -> tuple[str, int]:
    """A mono 16 kHz FLAC tone at `path`; returns its SHA-256 and size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * RATE)) / RATE
    pcm = (np.sin(2 * np.pi * freq * t) * 12000).astype(np.int16)
    sf.write(path, pcm, RATE, format="FLAC", subtype="PCM_16")
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


@dataclass
class World:
    sessions: sessionmaker[Session]
    root: Path
    dana: int
    marcus: int

    def call(
        self,
        *,
        account: str | None = "10042",
        caller: str | None = "+12125550101",
        callee: str | None = "ivr",
        direction: str = "inbound",
        started_at: dt.datetime = T0,
    ) -> int:
        with self.sessions.begin() as session:
            account_id = None
            if account is not None:
                account_id = session.query(Account.id).filter(Account.number == account).scalar()
            call = Call(
                direction=direction,
                caller=caller,
                callee=callee,
                account_id=account_id,
                worker="w0",
                sip_call_id=f"sip-{started_at.timestamp()}-{caller}",
                status="completed",
                started_at=started_at,
            )
            session.add(call)
            session.flush()
            return call.id

    def recording(
        self,
        call_id: int,
        *,
        started_at: dt.datetime = T0,
        seconds: float = 0.5,
        status: str = "final",
        retain_until: dt.datetime | None = None,
        legal_hold: bool = False,
        with_file: bool = True,
    ) -> int:
        with self.sessions.begin() as session:
            rec = Recording(
                call_id=call_id,
                path="pending",
                sample_rate=RATE,
                status=status,
                started_at=started_at,
                legal_hold=legal_hold,
                retain_until=retain_until,
            )
            session.add(rec)
            session.flush()
            rec.path = relative_path(call_id, rec.id, started_at, "flac")
            if with_file:
                rec.sha256, rec.bytes = write_flac(self.root / rec.path, seconds, 300 + rec.id)
                rec.duration_s = seconds
            rec.finalized_at = started_at + dt.timedelta(seconds=seconds)
            return rec.id

    def transcript(self, call_id: int, text: str, speaker: str = "caller") -> None:
        with self.sessions.begin() as session:
            session.add(Transcript(call_id=call_id, speaker=speaker, text=text))


def build_world(database_url: str, root: Path) -> Iterator[World]:
    engine = make_engine(database_url)
    create_schema(engine)
    sessions = make_sessions(engine)
    with sessions.begin() as session:
        dana, marcus = Collector(name="Dana Whitfield"), Collector(name="Marcus Lee")
        acme, fab = Customer(name="Northwind"), Customer(name="Fabrikam")
        session.add_all([dana, marcus, acme, fab])
        session.flush()
        session.add_all(
            [
                Account(number="10042", customer_id=acme.id, collector_id=dana.id),
                Account(number="20001", customer_id=fab.id, collector_id=marcus.id),
            ]
        )
        session.flush()
        ids = dana.id, marcus.id
    root.mkdir(parents=True, exist_ok=True)
    yield World(sessions, root, *ids)
    engine.dispose()
