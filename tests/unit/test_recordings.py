"""Recordings on disk: paths from ids only, integrity checks, retention and legal hold.

Real FLAC files, real SQLite and PostgreSQL (`world` runs on both), an injected clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from accounts.models import AuditEntry, Recording
from recordings.paths import UnsafePath, check_relative, path_for, relative_path
from recordings.retention import RecordingDeleted, Retention, retain_until_for, run_purge
from recordings.verify import RecordingNotFound, sha256_file, verify_all, verify_one
from tests.unit.recdata import T0, World, build_world, write_flac
from voice.config import Config, ConfigError, from_mapping

DAYS = 1096
YEAR3 = T0 + dt.timedelta(days=DAYS)


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    yield from build_world(database_url, tmp_path / "recordings")


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[World]:
    yield from build_world(f"sqlite:///{tmp_path / 'voice.db'}", tmp_path / "recordings")


# -- paths --------------------------------------------------------------------------------


def test_relative_path_layout() -> None:
    started = dt.datetime(2026, 11, 22, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    # The folder is the UTC day: 23:59 at UTC-5 is the 23rd in UTC.
    assert relative_path(12, 345, started, "flac") == "2026/11/23/call-12-rec-345.flac"
    assert relative_path(1, 2, T0, "flac.part") == "2026/03/10/call-1-rec-2.flac.part"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1, T0, "flac"), "call_id must be a positive integer"),
        ((1, -1, T0, "flac"), "recording_id must be a positive integer"),
        (("1", 1, T0, "flac"), "call_id must be a positive integer, got '1'"),
        ((True, 1, T0, "flac"), "call_id must be a positive integer, got True"),
        ((1, 1, T0, "../x"), "extension '../x'"),
        ((1, 1, T0, "FLAC"), "extension 'FLAC'"),
        ((1, 1, dt.datetime(2026, 1, 1), "flac"), "naive datetime"),
    ],
)
def test_relative_path_refuses_bad_input(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        relative_path(*args)  # type: ignore[arg-type]


def test_path_for_resolves_under_root(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    assert path_for("2026/03/10/call-1-rec-2.flac", root) == (
        root.resolve() / "2026/03/10/call-1-rec-2.flac"
    )


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "../voice.db",
        "2026/../../voice.db",
        "/etc/passwd",
        "2026/./03/x.flac",
        "2026//x.flac",
        "2026\\..\\x.flac",
        "2026/03/x.flac\x00.txt",
        "%2e%2e/x.flac",
        ".hidden",
        "2026/03/",
    ],
)
def test_path_for_refuses_tricks(tmp_path: Path, stored: str) -> None:
    with pytest.raises(UnsafePath):
        path_for(stored, tmp_path)


def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    (root / "2026").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.flac").write_bytes(b"secret")
    (root / "2026" / "03").symlink_to(outside)  # a folder link leading out
    (root / "2026" / "link.flac").symlink_to(tmp_path / "outside" / "x.flac")
    with pytest.raises(UnsafePath, match="outside the recordings folder"):
        path_for("2026/03/x.flac", root)
    with pytest.raises(UnsafePath, match="outside the recordings folder"):
        path_for("2026/link.flac", root)


def test_symlink_swapped_in_after_the_check_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    root.mkdir()
    path = path_for("a.flac", root)
    (tmp_path / "secret").write_bytes(b"x")
    path.symlink_to(tmp_path / "secret")
    with pytest.raises(OSError):
        sha256_file(path)


def test_check_relative_accepts_what_relative_path_builds() -> None:
    rel = relative_path(7, 8, T0, "flac")
    assert str(check_relative(rel)) == rel


def test_recordings_root_default_and_configured(tmp_path: Path) -> None:
    cfg = from_mapping({"data": {"dir": str(tmp_path)}}, {})
    assert cfg.recordings_dir == tmp_path.resolve() / "recordings"
    cfg = from_mapping({}, {"VOICE_RECORDINGS_DIR": str(tmp_path / "r")})
    assert cfg.recordings_dir == (tmp_path / "r").resolve()


def test_retention_floor_is_three_years() -> None:
    assert Config().recordings.retention_days == 1096
    with pytest.raises(ConfigError, match=r"recordings\.retention_days: 365 is outside 1096"):
        from_mapping({"recordings": {"retention_days": 365}}, {})


def test_webhook_config_needs_a_secret_and_an_http_url() -> None:
    with pytest.raises(ConfigError, match=r"webhook\.secret: required"):
        from_mapping({"webhook": {"url": "https://crm.example/hook"}}, {})
    with pytest.raises(ConfigError, match=r"webhook\.url: expected an http\(s\):// URL"):
        from_mapping({"webhook": {"url": "file:///etc/passwd", "secret": "s"}}, {})
    with pytest.raises(ConfigError, match=r"webhook\.backoff_max"):
        from_mapping({"webhook": {"backoff_initial": 60.0, "backoff_max": 30.0}}, {})


# -- verify -------------------------------------------------------------------------------


def test_verify_ok_then_tampered_missing_and_unsafe(world: World) -> None:
    call = world.call()
    good, tampered, missing, unsafe = (world.recording(call) for _ in range(4))
    with world.sessions() as session:
        paths = {r.id: r.path for r in session.scalars(select(Recording))}
    with (world.root / paths[tampered]).open("r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01")
    (world.root / paths[missing]).unlink()
    with world.sessions.begin() as session:
        row = session.get(Recording, unsafe)
        assert row is not None
        row.path = "../voice.db"

    assert verify_one(world.sessions, world.root, good).ok
    results = {v.recording_id: v for v in verify_all(world.sessions, world.root)}
    assert results[good].result == "ok"
    assert results[tampered].result == "mismatch"
    assert results[tampered].actual != results[tampered].expected
    assert results[missing].result == "missing"
    assert results[unsafe].result == "unsafe"
    with pytest.raises(RecordingNotFound):
        verify_one(world.sessions, world.root, 999)


def test_verify_skips_recordings_in_progress_and_flags_unhashed(sqlite_world: World) -> None:
    w = sqlite_world
    call = w.call()
    live = w.recording(call, status="recording", with_file=False)
    unhashed = w.recording(call, with_file=False)
    results = {v.recording_id: v.result for v in verify_all(w.sessions, w.root, page=1)}
    assert results == {unhashed: "no_hash"}
    assert verify_one(w.sessions, w.root, live).result == "not_final"


def test_verify_size_mismatch(sqlite_world: World) -> None:
    w = sqlite_world
    rid = w.recording(w.call())
    with w.sessions.begin() as session:
        row = session.get(Recording, rid)
        assert row is not None and row.bytes is not None
        row.bytes += 1
    result = verify_one(w.sessions, w.root, rid)
    assert (result.result, result.detail) == (
        "mismatch",
        f"{row.bytes - 1} bytes, {row.bytes} stored",
    )


# -- retention ----------------------------------------------------------------------------


def test_retain_until_for() -> None:
    cfg = Config()
    assert retain_until_for(T0, cfg) == T0 + dt.timedelta(days=1096)
    assert retain_until_for(T0, cfg.recordings) == T0 + dt.timedelta(days=1096)
    # At least three calendar years, even across a leap day.
    start = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
    assert retain_until_for(start, cfg) >= start.replace(year=2030)
    with pytest.raises(ValueError, match="naive"):
        retain_until_for(dt.datetime(2026, 1, 1), cfg)


def _state(w: World, rid: int) -> tuple[str, bool, dt.datetime | None, str | None]:
    with w.sessions() as session:
        rec = session.get(Recording, rid)
        assert rec is not None
        return rec.status, (w.root / rec.path).exists(), rec.deleted_at, rec.sha256


def test_purge_deletes_only_old_unheld_recordings(world: World) -> None:
    retention = Retention(world.sessions, world.root, DAYS, batch=2)
    call = world.call()
    until = retain_until_for(T0, Config())
    old = [world.recording(call, retain_until=until) for _ in range(3)]
    held = world.recording(call, retain_until=until, legal_hold=True)
    young = world.recording(
        call, started_at=T0 + dt.timedelta(days=1), retain_until=until + dt.timedelta(days=1)
    )
    # retain_until wrongly early: the call start still protects it for the full period.
    wrong = world.recording(call, started_at=T0 + dt.timedelta(days=30), retain_until=T0)
    unset = world.recording(call, retain_until=None)  # e.g. repaired after a crash
    live = world.recording(call, status="recording", with_file=False)

    # One second before the end of retention nothing goes, dry run or not.
    before = until - dt.timedelta(seconds=1)
    assert retention.purge(before, dry_run=True).deleted == []
    assert retention.purge(before).deleted == []

    dry = retention.purge(until, dry_run=True)
    assert dry.deleted == [*old, unset]
    assert all(_state(world, rid)[1] for rid in old)  # dry run touched nothing

    result = retention.purge(until)
    assert result.deleted == [*old, unset] and result.errors == [] and result.missing == []
    for rid in [*old, unset]:
        status, exists, deleted_at, sha = _state(world, rid)
        assert (status, exists, deleted_at) == ("deleted", False, until)
        assert sha is not None  # the row and its hash stay for the audit trail
    for rid in (held, young, wrong):
        assert _state(world, rid)[:2] == ("final", True)
    assert _state(world, live)[0] == "recording"

    # A day later the young one goes; the held one never, until the hold is lifted.
    assert retention.purge(until + dt.timedelta(days=1)).deleted == [young]
    far = until + dt.timedelta(days=3650)
    assert retention.purge(far).deleted == [wrong]
    assert _state(world, held)[:2] == ("final", True)
    assert retention.set_hold(held, False) is True
    assert retention.purge(far).deleted == [held]


def test_hold_set_clear_and_deleted(world: World) -> None:
    retention = Retention(world.sessions, world.root, DAYS)
    rid = world.recording(world.call(), retain_until=YEAR3)
    assert retention.set_hold(rid, True) is True
    assert retention.set_hold(rid, True) is False  # already held
    assert retention.purge(YEAR3 + dt.timedelta(days=9999)).deleted == []
    assert retention.set_hold(rid, False) is True
    assert retention.purge(YEAR3).deleted == [rid]
    with pytest.raises(RecordingDeleted, match=f"recording {rid} was deleted"):
        retention.set_hold(rid, True)
    assert retention.set_hold(rid, False) is False
    with pytest.raises(RecordingNotFound):
        retention.set_hold(12345, True)


def test_purge_finishes_a_deletion_cut_short(sqlite_world: World) -> None:
    # The file went but the process died before the commit: the next purge marks the row.
    w = sqlite_world
    rid = w.recording(w.call(), retain_until=YEAR3)
    with w.sessions() as session:
        rec = session.get(Recording, rid)
        assert rec is not None
        (w.root / rec.path).unlink()
    result = Retention(w.sessions, w.root, DAYS).purge(YEAR3)
    assert (result.deleted, result.missing) == ([rid], [rid])
    assert _state(w, rid)[0] == "deleted"


def test_purge_keeps_the_row_when_the_file_cannot_be_deleted(sqlite_world: World) -> None:
    w = sqlite_world
    keep = w.recording(w.call(), retain_until=YEAR3)
    bad = w.recording(w.call(), retain_until=YEAR3)
    with w.sessions.begin() as session:
        row = session.get(Recording, bad)
        assert row is not None
        row.path = "../../etc/passwd"
    with w.sessions() as session:
        rec = session.get(Recording, keep)
        assert rec is not None
        folder = (w.root / rec.path).parent
    os.chmod(folder, 0o500)  # no unlink in that folder
    try:
        result = Retention(w.sessions, w.root, DAYS).purge(YEAR3)
    finally:
        os.chmod(folder, 0o700)
    if os.geteuid() == 0:  # root ignores folder permissions
        assert keep in result.deleted
    else:
        assert keep in dict(result.errors) and _state(w, keep)[:2] == ("final", True)
    assert bad in dict(result.errors) and _state(w, bad)[0] == "final"


def test_purge_removes_emptied_day_folders(sqlite_world: World) -> None:
    w = sqlite_world
    rid = w.recording(w.call(), retain_until=YEAR3)
    other_day = T0 + dt.timedelta(days=1)
    w.recording(w.call(), started_at=other_day, retain_until=YEAR3 + dt.timedelta(days=1))
    Retention(w.sessions, w.root, DAYS).purge(YEAR3)
    assert not (w.root / "2026/03/10").exists()
    assert (w.root / "2026/03/11").is_dir()
    assert w.root.is_dir() and rid


def test_write_flac_is_real_flac(tmp_path: Path) -> None:
    digest, size = write_flac(tmp_path / "a.flac")
    assert (tmp_path / "a.flac").read_bytes()[:4] == b"fLaC"
    assert sha256_file(tmp_path / "a.flac") == (digest, size)


async def test_run_purge_deletes_on_its_own_until_stopped(sqlite_world: World) -> None:
    w = sqlite_world
    rid = w.recording(w.call(), retain_until=YEAR3)
    cfg = from_mapping({"recordings": {"dir": str(w.root)}}, {})
    stop = asyncio.Event()
    task = asyncio.create_task(run_purge(cfg, stop, w.sessions, clock=lambda: YEAR3, interval=0.05))
    for _ in range(100):
        if _state(w, rid)[0] == "deleted":
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert _state(w, rid)[:2] == ("deleted", False)
    with w.sessions() as session:
        [entry] = session.scalars(select(AuditEntry))
    assert (entry.action, entry.user_name, entry.detail["deleted"]) == (
        "recordings.purge",
        "cli",
        [rid],
    )
