"""Collectors' softphone logins: digests in the database, exported as Kamailio db_text tables.

The password is shown once (or read from stdin) and never stored: only HA1 digests are, which
is what Kamailio's auth_db compares against with `calculate_ha1 = 0`.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, sessionmaker

from accounts.models import SOFTPHONE_USERNAME, Collector, Softphone

MIN_PASSWORD = 8
# db_text table headers. auth_db reads `username` and `ha1` (password_column) only.
SUBSCRIBER_HEADER = "id(int,auto) username(string) domain(string) ha1(string) ha1b(string)"
VERSION_HEADER = "table_name(string) table_version(int)"
SUBSCRIBER_VERSION = 7  # the subscriber schema version auth_db 5.6 expects


class SoftphoneError(ValueError):
    """A softphone operation was refused; the message says why."""


def ha1(username: str, realm: str, password: str) -> str:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()


def ha1b(username: str, realm: str, password: str) -> str:
    # The variant for clients that send "user@domain" as the digest username.
    return hashlib.md5(f"{username}@{realm}:{realm}:{password}".encode()).hexdigest()


def generate_password() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, 144 bits


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise SoftphoneError(f"password too short: at least {MIN_PASSWORD} characters")
    if any(c in password for c in "\r\n\0"):
        raise SoftphoneError("password must be one line")


class Softphones:
    """Add, list, remove and re-key softphone logins."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def add(
        self, username: str, realm: str, password: str, collector: str | None = None
    ) -> Softphone:
        _check_username(username)
        check_password(password)
        with self._sessions() as session, session.begin():
            if session.scalar(select(Softphone).where(Softphone.username == username)):
                raise SoftphoneError(f"softphone {username!r} already exists")
            collector_id = None
            if collector is not None:
                found = session.scalar(select(Collector).where(Collector.name == collector))
                if found is None:
                    raise SoftphoneError(f"unknown collector {collector!r}")
                collector_id = found.id
            phone = Softphone(
                username=username,
                realm=realm,
                ha1=ha1(username, realm, password),
                ha1b=ha1b(username, realm, password),
                collector_id=collector_id,
            )
            session.add(phone)
        return self.get(username)

    def get(self, username: str) -> Softphone:
        with self._sessions() as session:
            phone = session.scalar(select(Softphone).where(Softphone.username == username))
        if phone is None:
            raise SoftphoneError(f"no softphone {username!r}")
        return phone

    def list(self) -> list[Softphone]:
        with self._sessions() as session:
            return list(session.scalars(select(Softphone).order_by(Softphone.username)))

    def remove(self, username: str) -> None:
        with self._sessions() as session, session.begin():
            phone = session.scalar(select(Softphone).where(Softphone.username == username))
            if phone is None:
                raise SoftphoneError(f"no softphone {username!r}")
            session.delete(phone)

    def set_password(self, username: str, realm: str, password: str) -> Softphone:
        check_password(password)
        with self._sessions() as session, session.begin():
            phone = session.scalar(select(Softphone).where(Softphone.username == username))
            if phone is None:
                raise SoftphoneError(f"no softphone {username!r}")
            phone.realm = realm
            phone.ha1 = ha1(username, realm, password)
            phone.ha1b = ha1b(username, realm, password)
        return self.get(username)


def _check_username(username: str) -> None:
    if not SOFTPHONE_USERNAME.fullmatch(username):
        raise SoftphoneError(f"softphone username {username!r}: use 1-64 of a-z 0-9 . _ -")


def export_credentials(
    database_url: str, realm: str, folder: Path, *, busy_timeout_ms: int = 5000
) -> dict[str, str]:
    """Write the db_text `version` and `subscriber` tables for `realm`; return user -> ha1.

    Softphones created under another realm cannot log in (their digest names the old realm);
    they are left out until `voice softphones passwd` gives them a new password.
    """
    from accounts.db import make_engine, make_sessions

    engine = make_engine(database_url, busy_timeout_ms)
    try:
        # Read-only: a database without the table (never set up) simply has no softphones.
        exists = inspect(engine).has_table(Softphone.__tablename__)
        phones = Softphones(make_sessions(engine)).list() if exists else []
    finally:
        engine.dispose()
    return write_dbtext(phones, realm, folder)


def read_dbtext(folder: Path) -> dict[str, str]:
    """username -> ha1 of the subscriber table as exported last (empty if none)."""
    try:
        lines = (folder / "subscriber").read_text(encoding="utf-8").splitlines()[1:]
    except FileNotFoundError:
        return {}
    rows = (line.split(":") for line in lines if line)
    return {row[1]: row[3] for row in rows if len(row) == 5}


def write_dbtext(phones: list[Softphone], realm: str, folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    rows, exported = [], {}
    for i, phone in enumerate(p for p in phones if p.realm == realm):
        # Every field is [a-z0-9._-] or hex or a domain name: nothing db_text would escape.
        rows.append(f"{i + 1}:{phone.username}:{realm}:{phone.ha1}:{phone.ha1b}")
        exported[phone.username] = phone.ha1
    _replace_table(folder / "version", [VERSION_HEADER, f"subscriber:{SUBSCRIBER_VERSION}"])
    _replace_table(folder / "subscriber", [SUBSCRIBER_HEADER, *rows])
    return exported


def _replace_table(path: Path, lines: list[str]) -> None:
    """Atomic replace whose mtime always moves forward by at least one second.

    db_text notices a changed table by comparing whole-second mtimes, so two exports in the
    same second would leave Kamailio on the first one; the second is dated a second later.
    """
    text = "\n".join(lines) + "\n"
    try:
        if path.read_text(encoding="utf-8") == text:
            return
        previous = int(path.stat().st_mtime)
    except FileNotFoundError:
        previous = 0
    mtime = max(int(time.time()), previous + 1)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)
