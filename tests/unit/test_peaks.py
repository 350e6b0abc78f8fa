"""Waveform peaks: per channel from real FLAC files, PCI pauses as gaps, computed once and
cached beside the recording, served by the API with the recording's access rule and audit."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from accounts.models import Recording
from recordings import peaks
from recordings.retention import Retention
from tests.unit.apiworld import World, make_world
from voice.api.auth import DENIED

RATE = 16000


def _stereo_flac(path: Path, seconds: float = 4.0) -> tuple[str, int]:
    """Customer (left) speaks loud in the first half, collector (right) softly in the second."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    left = np.where(t < seconds / 2, 0.8, 0.0) * np.sin(2 * np.pi * 300 * t)
    right = np.where(t >= seconds / 2, 0.25, 0.0) * np.sin(2 * np.pi * 500 * t)
    sf.write(path, np.stack([left, right], axis=1), RATE, format="FLAC", subtype="PCM_16")
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), len(data)


def test_two_channels_are_two_lanes_and_a_pause_is_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "call.flac"
    _stereo_flac(path)
    with open(path, "rb") as audio:
        levels, rate, frames = peaks.compute(audio, [{"start": 1.0, "end": 1.5}], buckets=40)
    assert (rate, frames, len(levels)) == (RATE, 4 * RATE, 2)
    left, right = levels
    assert len(left) == len(right) == 40  # 0.1 s each
    assert left[10:15] == [None] * 5 == right[10:15]  # 1.0-1.5 s
    assert left[9] is not None and left[15] is not None
    assert all(0.75 < (v or 0) <= 0.81 for v in left[:10] + left[15:20])
    assert all(v == 0.0 for v in left[20:])
    assert all(v == 0.0 for v in right[:10])
    assert all(0.2 < (v or 0) <= 0.26 for v in right[20:])


def test_bucket_boundaries_across_read_blocks(tmp_path: Path) -> None:
    # A click at one sample lands in exactly one bucket, wherever the read blocks split.
    path = tmp_path / "click.flac"
    pcm = np.zeros(peaks.BLOCK_FRAMES * 3 + 123, dtype=np.int16)
    click = peaks.BLOCK_FRAMES + 7
    pcm[click] = 16000
    sf.write(path, pcm, RATE, format="FLAC", subtype="PCM_16")
    with open(path, "rb") as audio:
        [lane], _, frames = peaks.compute(audio, [], buckets=97)
    per = -(-frames // 97)
    hot = [i for i, v in enumerate(lane) if v]
    assert hot == [click // per]
    assert lane[click // per] == pytest.approx(16000 / 32768, abs=1e-3)


# -- through the API ---------------------------------------------------------------------


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    w = make_world(database_url, tmp_path / "recordings")
    yield w
    w.engine.dispose()


def _bridged(world: World, rid: str, root: Path) -> Path:
    """Turn a world recording into a two-channel bridged one with a PCI pause."""
    with world.sessions.begin() as session:
        rec = session.get(Recording, int(rid))
        assert rec is not None
        path = root / rec.path
        rec.sha256, rec.bytes = _stereo_flac(path)
        rec.channels, rec.pauses = 2, [{"start": 1.0, "end": 1.5}]
    return path


def test_peaks_over_http_are_cached_once_and_audited(world: World, tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    rid = world.targets["own"]["recording_id"]
    audio = _bridged(world, rid, root)
    before = world.last_audit_id()
    response = world.request("GET", f"/api/recordings/{rid}/peaks", "collector")
    assert response.status_code == 200
    body = response.json()
    assert [lane["name"] for lane in body["lanes"]] == ["customer", "collector"]
    assert body["duration_s"] == pytest.approx(4.0)
    assert len(body["lanes"][0]["peaks"]) == 4 * peaks.BUCKETS_PER_SECOND
    gap = body["lanes"][0]["peaks"][20:30]
    assert gap == [None] * 10 and body["pauses"] == [{"start": 1.0, "end": 1.5}]
    [entry] = world.audit_since(before)
    assert (entry.action, entry.user_name, entry.target_id) == ("recording.peaks", "dana", rid)
    cache = audio.with_name(audio.name + ".peaks.json")
    assert json.loads(cache.read_text())["sha256"] == body["sha256"]
    # Served from the cache from now on: a marker written into it comes back.
    cached = json.loads(cache.read_text())
    cached["lanes"][1]["peaks"][0] = 0.5
    cache.write_text(json.dumps(cached))
    again = world.request("GET", f"/api/recordings/{rid}/peaks", "compliance").json()
    assert again["lanes"][1]["peaks"][0] == 0.5
    # A cache made from other audio (another hash) is recomputed, never served.
    cached["sha256"] = "0" * 64
    cache.write_text(json.dumps(cached))
    fresh = world.request("GET", f"/api/recordings/{rid}/peaks", "compliance").json()
    assert fresh["lanes"][1]["peaks"][0] == 0.0


def test_peaks_follow_the_recording_access_rule(world: World, tmp_path: Path) -> None:
    other = world.targets["other"]["recording_id"]
    before = world.last_audit_id()
    assert world.request("GET", f"/api/recordings/{other}/peaks", "collector").status_code == 404
    [entry] = world.audit_since(before)
    assert (entry.action, entry.target_id, entry.detail["status"]) == (DENIED, other, 404)
    assert world.request("GET", "/api/recordings/999999/peaks", "admin").status_code == 404
    assert world.request("GET", f"/api/recordings/{other}/peaks", "anonymous").status_code == 401
    with world.sessions.begin() as session:
        rec = session.get(Recording, int(other))
        assert rec is not None
        rec.status = "recording"
    assert world.request("GET", f"/api/recordings/{other}/peaks", "admin").status_code == 409


def test_the_purge_removes_the_waveform_with_the_audio(world: World, tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    rid = world.targets["own"]["recording_id"]
    audio = _bridged(world, rid, root)
    assert world.request("GET", f"/api/recordings/{rid}/peaks", "admin").status_code == 200
    cache = audio.with_name(audio.name + ".peaks.json")
    assert cache.exists()
    with world.sessions.begin() as session:
        rec = session.get(Recording, int(rid))
        assert rec is not None
        rec.retain_until = rec.started_at
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1100)  # past the 1096-day minimum
    result = Retention(world.sessions, root, 1096).purge(later)
    assert int(rid) in result.deleted
    assert not audio.exists() and not cache.exists()
    assert world.request("GET", f"/api/recordings/{rid}/peaks", "admin").status_code == 410
