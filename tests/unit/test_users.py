"""API users and tokens on SQLite and PostgreSQL, and `voice users` as an administrator runs it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from accounts.db import create_schema, make_engine, make_sessions
from accounts.models import AuditEntry, Collector, User
from accounts.users import TOKEN_PREFIX, Principal, UserError, Users, generate_token, hash_token
from voice.cli import main


def test_tokens_are_long_random_and_hashed_with_sha256() -> None:
    tokens = {generate_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(t.startswith(TOKEN_PREFIX) and len(t) >= 43 + len(TOKEN_PREFIX) for t in tokens)
    token = next(iter(tokens))
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
def users(database_url: str) -> Iterator[Users]:
    engine = make_engine(database_url)
    create_schema(engine)
    sessions = make_sessions(engine)
    with sessions.begin() as session:
        session.add(Collector(name="Dana Whitfield"))
    try:
        yield Users(sessions)
    finally:
        engine.dispose()


def _stored(users: Users) -> list[str]:
    """Every value of every users row, as text."""
    with users._sessions() as session:
        rows = session.execute(select(User.__table__)).all()
    return [str(value) for row in rows for value in row]


def test_add_stores_only_the_hash_and_authenticates(users: Users) -> None:
    user, token = users.add("dana", "collector", "Dana Whitfield")
    assert user.collector is not None and user.collector.name == "Dana Whitfield"
    assert user.token_hash == hash_token(token) and user.active
    assert not any(token in value for value in _stored(users))
    principal = users.authenticate(token)
    assert principal == Principal(user.id, "dana", "collector", user.collector_id)


def test_rotate_disable_enable(users: Users) -> None:
    _, first = users.add("sam", "supervisor")
    second = users.rotate_token("sam")
    assert users.authenticate(first) is None
    assert users.authenticate(second) is not None
    users.disable("sam")
    assert users.authenticate(second) is None
    assert users.get("sam").token_hash is None and users.get("sam").disabled_at is not None
    with pytest.raises(UserError, match="is disabled"):
        users.rotate_token("sam")
    with pytest.raises(UserError, match="already disabled"):
        users.disable("sam")
    third = users.enable("sam")
    assert [users.authenticate(t) is not None for t in (first, second, third)] == [
        False,
        False,
        True,
    ]
    with pytest.raises(UserError, match="not disabled"):
        users.enable("sam")


@pytest.mark.parametrize(
    ("name", "role", "collector", "message"),
    [
        ("Dana", "admin", None, "use 1-64 of a-z"),
        ("da na", "admin", None, "use 1-64 of a-z"),
        ("d" * 65, "admin", None, "use 1-64 of a-z"),
        ("dana", "root", None, "unknown role 'root'"),
        ("dana", "collector", None, "needs --collector"),
        ("dana", "collector", "Nobody", "unknown collector 'Nobody'"),
        ("dana", "admin", "Dana Whitfield", "only collector users"),
    ],
)
def test_add_refuses_bad_input(
    users: Users, name: str, role: str, collector: str | None, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        users.add(name, role, collector)
    assert users.list() == []


def test_names_are_unique_and_unknown_names_are_errors(users: Users) -> None:
    users.add("ada", "admin")
    with pytest.raises(UserError, match="already exists"):
        users.add("ada", "compliance")
    for op in (users.rotate_token, users.disable, users.enable, users.get):
        with pytest.raises(UserError, match="no user 'bob'"):
            op("bob")


@pytest.mark.parametrize(
    "token", ["", "cv_", "not-a-token", "cv_" + "a" * 500, "Bearer cv_x", "cv_\x00"]
)
def test_junk_tokens_authenticate_nobody(users: Users, token: str) -> None:
    users.add("ada", "admin")
    assert users.authenticate(token) is None


def test_every_change_is_audited_as_the_command_line(users: Users) -> None:
    users.add("ada", "admin")
    users.rotate_token("ada")
    users.disable("ada")
    users.enable("ada")
    with users._sessions() as session:
        rows = session.execute(
            select(AuditEntry.user_name, AuditEntry.role, AuditEntry.action, AuditEntry.target_id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("cli", "system", action, "ada")
        for action in ("user.create", "user.token", "user.disable", "user.enable")
    ]


def test_a_failed_change_leaves_no_audit_row(users: Users) -> None:
    with pytest.raises(UserError):
        users.disable("nobody")
    with users._sessions() as session:
        assert session.scalars(select(AuditEntry)).all() == []


@pytest.fixture
def voice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    """`voice ARGS...` in this process (the integration test runs the real one)."""
    monkeypatch.setenv("VOICE_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no ./config.toml here: defaults and the environment only

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_cli_add_list_token_disable(
    voice: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    assert voice("init-db")[0] == 0  # demo collectors
    code, out, err = voice("users", "add", "dana", "--role", "collector", "--collector",
                           "Dana Whitfield")  # fmt: skip
    assert code == 0, err
    assert "user dana added (role collector, collector Dana Whitfield)" in out
    token = out.split("token: ", 1)[1].split()[0]

    code, out, _ = voice("users", "list")
    assert code == 0 and token not in out
    assert out.split()[:5] == ["dana", "collector", "Dana", "Whitfield", "active"]

    code, out, _ = voice("users", "token", "dana")
    new = out.split("token: ", 1)[1].split()[0]
    engine = make_engine(f"sqlite:///{tmp_path / 'voice.db'}")
    users = Users(make_sessions(engine))
    assert users.authenticate(token) is None and users.authenticate(new) is not None

    assert voice("users", "disable", "dana")[0] == 0
    assert users.authenticate(new) is None
    assert "disabled" in voice("users", "list")[1]
    code, out, _ = voice("users", "enable", "dana")
    assert code == 0 and users.authenticate(out.split("token: ", 1)[1].split()[0]) is not None
    engine.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "x", "--role", "root"), "unknown role 'root'"),
        (("add", "x", "--role", "collector"), "needs --collector"),
        (("add", "x", "--role", "collector", "--collector", "Nobody"), "unknown collector"),
        (("token", "nobody"), "no user 'nobody'"),
        (("disable", "nobody"), "no user 'nobody'"),
    ],
)
def test_cli_user_errors_exit_1(
    voice: Callable[..., tuple[int, str, str]], args: tuple[str, ...], message: str
) -> None:
    code, _, err = voice("users", *args)
    assert code == 1
    assert message in err
