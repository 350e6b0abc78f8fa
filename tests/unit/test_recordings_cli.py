"""`voice recordings verify | purge | hold | release` as an administrator runs them: a real
process over a real SQLite file and real FLAC files."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from accounts.models import AuditEntry, Recording
from recordings.retention import retain_until_for
from tests.unit.recdata import World, build_world
from voice.config import Config

REPO = Path(__file__).resolve().parents[2]


def voice(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voice", "recordings", *args],
        env={**os.environ, "VOICE_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    # The layout `voice` uses by default: <data.dir>/voice.db and <data.dir>/recordings.
    yield from build_world(f"sqlite:///{tmp_path / 'voice.db'}", tmp_path / "recordings")


def _audit(world: World) -> list[tuple[str, str, str | None]]:
    with world.sessions() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(r.action, r.user_name, r.target_id) for r in rows]


def test_verify_passes_then_names_what_fails(world: World, tmp_path: Path) -> None:
    call = world.call()
    first, second = world.recording(call), world.recording(call)
    out = voice("verify", data_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "2 recording(s) checked" in out.stdout and "2 ok" in out.stdout

    with world.sessions() as session:
        rec = session.get(Recording, second)
        assert rec is not None
        path = world.root / rec.path
    path.write_bytes(path.read_bytes() + b"\x00")
    out = voice("verify", data_dir=tmp_path)
    assert out.returncode == 1
    assert f"recording {second}: mismatch" in out.stdout
    assert "1 mismatch, 1 ok" in out.stdout
    path.unlink()
    out = voice("verify", "--verbose", data_dir=tmp_path)
    assert out.returncode == 1
    assert f"recording {second}: missing" in out.stdout
    assert f"recording {first}: ok" in out.stdout
    assert [a for a, _, _ in _audit(world)] == ["recordings.verify"] * 3
    assert {u for _, u, _ in _audit(world)} == {"cli"}


def test_purge_dry_run_then_for_real_keeping_held_recordings(world: World, tmp_path: Path) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=1200)
    until = retain_until_for(old, Config())
    call = world.call(started_at=old)
    gone = world.recording(call, started_at=old, retain_until=until)
    held = world.recording(call, started_at=old, retain_until=until)
    young = world.recording(world.call())

    out = voice("hold", str(held), "--reason", "Matter 2026-17", data_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"recording {held} is now on legal hold" in out.stdout

    out = voice("purge", "--dry-run", data_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"would delete 1 recording(s) past retention: {gone}" in out.stdout
    with world.sessions() as session:
        assert session.get(Recording, gone).status == "final"  # type: ignore[union-attr]

    out = voice("purge", data_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"deleted 1 recording(s) past retention: {gone}" in out.stdout
    with world.sessions() as session:
        states = {r.id: r.status for r in session.scalars(select(Recording))}
    assert states == {gone: "deleted", held: "final", young: "final"}

    assert voice("release", str(held), data_dir=tmp_path).returncode == 0
    out = voice("purge", data_dir=tmp_path)
    assert f"deleted 1 recording(s) past retention: {held}" in out.stdout
    out = voice("hold", str(held), "--reason", "too late", data_dir=tmp_path)
    assert out.returncode == 1 and f"recording {held} was deleted" in out.stderr
    out = voice("hold", "999", "--reason", "x", data_dir=tmp_path)
    assert out.returncode == 1 and "no recording 999" in out.stderr
    assert _audit(world) == [
        ("recording.hold", "cli", str(held)),
        ("recordings.purge", "cli", None),
        ("recording.release", "cli", str(held)),
        ("recordings.purge", "cli", None),
    ]
