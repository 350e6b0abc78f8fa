"""Softphone logins: digests only, the service rules, the db_text export and the CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from accounts.db import create_schema, make_engine, make_sessions
from accounts.models import Collector, Softphone
from voice.routing.softphones import (
    SUBSCRIBER_HEADER,
    SoftphoneError,
    Softphones,
    generate_password,
    ha1,
    ha1b,
    read_dbtext,
    write_dbtext,
)

REPO = Path(__file__).resolve().parents[2]
REALM = "collections-voice"


def test_ha1_is_the_rfc_2617_digest_of_user_realm_password() -> None:
    # RFC 2617 section 3.5: Mufasa / testrealm@host.com / "Circle Of Life".
    assert ha1("Mufasa", "testrealm@host.com", "Circle Of Life") == (
        "939e7578ed9e3c518a452acee763bce9"
    )
    expected_b = hashlib.md5(b"alice@voice.example:voice.example:pw").hexdigest()
    assert ha1b("alice", "voice.example", "pw") == expected_b


def test_generated_passwords_are_long_and_different() -> None:
    passwords = {generate_password() for _ in range(20)}
    assert len(passwords) == 20
    assert all(len(p) >= 24 for p in passwords)


@pytest.fixture
def phones(database_url: str) -> Iterator[Softphones]:
    engine = make_engine(database_url)
    create_schema(engine)
    sessions = make_sessions(engine)
    with sessions() as session, session.begin():
        session.add(Collector(name="Dana Whitfield"))
    try:
        yield Softphones(sessions)
    finally:
        engine.dispose()


def test_add_keeps_only_digests_and_links_the_collector(phones: Softphones) -> None:
    phone = phones.add("alice", REALM, "correct-horse-1", collector="Dana Whitfield")
    assert phone.ha1 == ha1("alice", REALM, "correct-horse-1")
    assert phone.ha1b == ha1b("alice", REALM, "correct-horse-1")
    assert phone.collector is not None and phone.collector.name == "Dana Whitfield"
    assert phone.created_at.tzinfo is not None
    stored = [str(v) for v in vars(phone).values()]
    assert not any("correct-horse-1" in v for v in stored)


@pytest.mark.parametrize(
    ("name", "password", "collector", "message"),
    [
        ("Alice", "correct-horse-1", None, "use 1-64 of a-z"),
        ("al ice", "correct-horse-1", None, "use 1-64 of a-z"),
        ("a" * 65, "correct-horse-1", None, "use 1-64 of a-z"),
        ("al:ice", "correct-horse-1", None, "use 1-64 of a-z"),
        ("alice", "short", None, "at least 8"),
        ("alice", "two\nlines!", None, "one line"),
        ("alice", "correct-horse-1", "Nobody", "unknown collector"),
    ],
)
def test_add_refuses_bad_input(
    phones: Softphones, name: str, password: str, collector: str | None, message: str
) -> None:
    with pytest.raises(SoftphoneError, match=message):
        phones.add(name, REALM, password, collector)
    assert phones.list() == []


def test_the_model_itself_refuses_a_bad_username() -> None:
    with pytest.raises(ValueError, match="use 1-64"):
        Softphone(username="x;drop", realm=REALM, ha1="0" * 32, ha1b="0" * 32)


def test_duplicate_passwd_remove(phones: Softphones) -> None:
    phones.add("alice", REALM, "correct-horse-1")
    with pytest.raises(SoftphoneError, match="already exists"):
        phones.add("alice", REALM, "another-one-2")
    changed = phones.set_password("alice", "new.realm", "another-one-2")
    assert (changed.realm, changed.ha1) == ("new.realm", ha1("alice", "new.realm", "another-one-2"))
    phones.remove("alice")
    assert phones.list() == []
    for op in (
        lambda: phones.remove("alice"),
        lambda: phones.set_password("alice", REALM, "x" * 9),
    ):
        with pytest.raises(SoftphoneError, match="no softphone 'alice'"):
            op()


def test_dbtext_export_lists_this_realm_only(tmp_path: Path) -> None:
    a = Softphone(username="alice", realm=REALM, ha1="a" * 32, ha1b="b" * 32)
    old = Softphone(username="olga", realm="old.realm", ha1="c" * 32, ha1b="d" * 32)
    exported = write_dbtext([a, old], REALM, tmp_path)
    assert exported == {"alice": "a" * 32}
    assert (tmp_path / "subscriber").read_text() == (
        f"{SUBSCRIBER_HEADER}\n1:alice:{REALM}:{'a' * 32}:{'b' * 32}\n"
    )
    assert (tmp_path / "version").read_text().splitlines()[1] == "subscriber:7"
    assert read_dbtext(tmp_path) == exported


def test_dbtext_mtime_moves_forward_even_within_one_second(tmp_path: Path) -> None:
    # db_text reloads a table only when its whole-second mtime grows.
    a = Softphone(username="alice", realm=REALM, ha1="a" * 32, ha1b="b" * 32)
    b = Softphone(username="bob", realm=REALM, ha1="c" * 32, ha1b="d" * 32)
    table = tmp_path / "subscriber"
    write_dbtext([a], REALM, tmp_path)
    first = int(table.stat().st_mtime)
    write_dbtext([a, b], REALM, tmp_path)
    second = int(table.stat().st_mtime)
    assert second > first
    write_dbtext([a, b], REALM, tmp_path)  # nothing changed: file left alone
    assert int(table.stat().st_mtime) == second
    assert second <= time.time() + 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subscriber", "version"]  # no temp files


# -- the CLI, as an administrator runs it ----------------------------------------------------


def voice(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voice", *args],
        env={**os.environ, "VOICE_DATA_DIR": str(data_dir)},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def stored(data_dir: Path) -> dict[str, Softphone]:
    engine = make_engine(f"sqlite:///{data_dir / 'voice.db'}")
    try:
        with make_sessions(engine)() as session:
            return {p.username: p for p in session.scalars(select(Softphone))}
    finally:
        engine.dispose()


def test_cli_add_list_passwd_remove(tmp_path: Path) -> None:
    assert voice(tmp_path, "init-db").returncode == 0  # demo data has collector Dana Whitfield
    out = voice(tmp_path, "softphones", "add", "alice", "--collector", "Dana Whitfield")
    assert out.returncode == 0, out.stderr
    password = out.stdout.split("password: ", 1)[1].split()[0]
    assert stored(tmp_path)["alice"].ha1 == ha1("alice", REALM, password)

    out = voice(tmp_path, "softphones", "add", "bob", "--password-stdin", stdin="bob-secret-1\n")
    assert out.returncode == 0, out.stderr
    assert "password:" not in out.stdout  # the admin typed it; it is not echoed
    assert stored(tmp_path)["bob"].ha1 == ha1("bob", REALM, "bob-secret-1")

    out = voice(tmp_path, "softphones", "list")
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["alice", "bob"]
    assert "Dana Whitfield" in lines[0] and password not in out.stdout

    out = voice(tmp_path, "softphones", "passwd", "alice")
    new_password = out.stdout.split("password: ", 1)[1].split()[0]
    assert new_password != password
    assert stored(tmp_path)["alice"].ha1 == ha1("alice", REALM, new_password)

    assert voice(tmp_path, "softphones", "remove", "alice").returncode == 0
    assert set(stored(tmp_path)) == {"bob"}


def test_cli_errors_exit_1_and_change_nothing(tmp_path: Path) -> None:
    out = voice(tmp_path, "softphones", "add", "Bad Name")
    assert out.returncode == 1 and "use 1-64 of a-z" in out.stderr
    out = voice(tmp_path, "softphones", "add", "alice", "--collector", "Nobody")
    assert out.returncode == 1 and "unknown collector 'Nobody'" in out.stderr
    out = voice(tmp_path, "softphones", "add", "alice", "--password-stdin", stdin="short\n")
    assert out.returncode == 1 and "at least 8" in out.stderr
    out = voice(tmp_path, "softphones", "remove", "ghost")
    assert out.returncode == 1 and "no softphone 'ghost'" in out.stderr
    assert stored(tmp_path) == {}
    assert voice(tmp_path, "softphones", "list").stdout.strip() == "voice: no softphones"


def test_cli_updates_the_tables_of_a_server_that_ran_here(tmp_path: Path) -> None:
    tables = tmp_path / "run" / "kamailio" / "db"
    tables.mkdir(parents=True)
    out = voice(tmp_path, "softphones", "add", "alice")
    assert out.returncode == 0, out.stderr
    assert "no restart" in out.stdout
    assert set(read_dbtext(tables)) == {"alice"}
    voice(tmp_path, "softphones", "remove", "alice")
    assert read_dbtext(tables) == {}
