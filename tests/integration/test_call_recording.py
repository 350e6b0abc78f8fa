"""Every call recorded: both directions in one FLAC with its SHA-256, and nothing lost when the
worker is killed mid-call or the disk fills up. The server runs as a real process."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile
from sqlalchemy import select

from accounts.models import AuditEntry, Call, Note, Recording
from recordings.paths import path_for
from tests.integration.audio import match_in_order
from tests.integration.conftest import (
    REPO,
    TEST_TTS,
    Server,
    last_call_id,
    run_ua,
    scrape,
    start_server,
    start_ua,
    stop_server,
    wait_for,
)
from tests.tinyfs import tiny_fs
from voice.ivr.clips import ClipLibrary
from voice.ivr.inbound import balance_answer

RATE = 16000
KNOWN = "+12125550101"
VOICE_HZ = 700  # the caller "speaks" a tone no prompt contains


def caller_voice(path: Path, seconds: float) -> Path:
    t = np.arange(int(RATE * seconds)) / RATE
    pcm = (6000 * np.sin(2 * np.pi * VOICE_HZ * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm.tobytes())
    return path


def recording_of(server: Server, call_id: int) -> Recording:
    with server.session() as session:
        rec = session.scalars(select(Recording).where(Recording.call_id == call_id)).one()
        session.expunge(rec)
        return rec


def closed_recording(server: Server, call_id: int, timeout: float = 20.0) -> Recording:
    def done() -> Recording | None:
        try:
            rec = recording_of(server, call_id)
        except Exception:
            return None
        return rec if rec.status != "recording" else None

    rec = wait_for(done, timeout)
    assert rec, f"recording of call {call_id} not closed:\n{server.log()[-3000:]}"
    return rec  # type: ignore[return-value]


def note_of(server: Server, call_id: int) -> str:
    with server.session() as session:
        return session.scalar(select(Note.body).where(Note.call_id == call_id)) or ""


def call_row(server: Server, call_id: int) -> Call:
    with server.session() as session:
        call = session.get(Call, call_id)
        assert call is not None
        session.expunge(call)
        return call


def tone_level(audio: np.ndarray, hz: float) -> float:
    """Energy share of `hz` (±20 Hz) in `audio`."""
    spectrum = np.abs(np.fft.rfft(audio.astype(float))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / RATE)
    band = (freqs > hz - 20) & (freqs < hz + 20)
    return float(spectrum[band].sum() / max(spectrum.sum(), 1e-9))


def test_a_call_is_recorded_both_ways_into_a_hashed_flac(server: Server, tmp_path: Path) -> None:
    voice = caller_voice(tmp_path / "voice.wav", 1.5)
    [report] = run_ua(server, f"audio;say:{voice};wait:2;dtmf:1;audio;wait:7;hangup", caller=KNOWN)
    assert report["code"] == 200 and not report["error"], report
    call_id = last_call_id(server, KNOWN)
    rec = closed_recording(server, call_id)
    assert (rec.status, rec.format, rec.channels, rec.sample_rate) == ("final", "flac", 1, RATE)
    assert rec.loss is None
    file = path_for(rec, server.data_dir / "recordings")
    assert file.suffix == ".flac" and not file.with_suffix(".wav").exists()
    assert hashlib.sha256(file.read_bytes()).hexdigest() == rec.sha256
    audio, rate = soundfile.read(file, dtype="int16")
    assert rate == RATE and abs(len(audio) / RATE - rec.duration_s) < 0.01
    call = call_row(server, call_id)
    call_seconds = (call.ended_at - call.answered_at).total_seconds()
    assert abs(rec.duration_s - call_seconds) < 1.0, (rec.duration_s, call_seconds)
    assert rec.retain_until is not None
    assert rec.retain_until - rec.started_at >= dt.timedelta(days=3 * 365)

    # The IVR's side: the balance answer, as rendered from the prompt cache, in order.
    ledger = server.ledger()
    account = ledger.account_by_number("10042")
    clips = ClipLibrary(
        TEST_TTS,
        server.data_dir / "cache" / "tts",
        server.data_dir / "prompts",
        "Acme Receivables",
    )
    answer = clips.render(balance_answer(ledger.balance(account.id, dt.date.today()))[0])
    # The caller hung up 7 s into the 10 s answer: its first 5 s are in the file, bit-exact
    # (the recording taps our own audio before any codec: r measured 0.99999).
    score, jump, _ = match_in_order(audio, answer[: 5 * RATE])
    assert score > 0.99 and jump < 0.01, (score, jump)
    # The caller's side: their "voice" is in the file, where they spoke, and nowhere else.
    said = [t for t, kind, _ in report["events"] if kind == "say"][0]
    start = int(max(0.0, said) * RATE)
    assert tone_level(audio[start : start + RATE], VOICE_HZ) > 0.3
    assert tone_level(audio[-2 * RATE :], VOICE_HZ) < 0.1  # speech alone: ~0.02
    assert f"Recording {rec.id}:" in note_of(server, call_id)


def test_worker_killed_mid_call_leaves_a_playable_interrupted_recording(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path / "voice", {"VOICE_WORKERS_RESTART_DELAY": "0.2"})
    try:
        ua = start_ua(
            server,
            "audio;wait:3;dtmf:1;wait:60;hangup",
            tmp_path / "ua.out",
            caller=KNOWN,
            timeout=90,
        )
        dialled_at = time.monotonic()
        call_id = wait_for(lambda: _identified_call(server), 20)
        assert call_id, server.log()[-3000:]
        time.sleep(4.0)  # the call runs: greeting, menu, balance
        [worker] = server.health()["workers"]
        killed_at = time.monotonic()
        os.kill(worker["pid"], signal.SIGKILL)
        rec = closed_recording(server, call_id)
        ua.kill()
        ua.wait(30)
        call = call_row(server, call_id)
        assert call.status == "interrupted" and "killed by signal 9" in (call.end_reason or "")
        assert rec.status == "interrupted" and rec.format == "flac"
        file = path_for(rec, server.data_dir / "recordings")
        audio, rate = soundfile.read(file, dtype="int16")  # it plays
        assert hashlib.sha256(file.read_bytes()).hexdigest() == rec.sha256
        lived = killed_at - dialled_at
        # The call lived `lived` seconds from the UA's dial; the recording starts at answer
        # and loses at most the writer's last 4 KB buffer (0.13 s) to the kill.
        assert lived - 1.5 < rec.duration_s <= lived, (rec.duration_s, lived)
        assert np.abs(audio).max() > 1000  # not an empty shell: the prompts are in it
        note = note_of(server, call_id)
        assert "was interrupted" in note and f"Recording {rec.id}:" in note
        assert wait_for(lambda: server.health()["status"] == "ok", 20)  # restarted
    finally:
        stop_server(server)


def test_a_full_disk_loses_the_rest_of_the_recording_not_the_call(tmp_path: Path) -> None:
    with tiny_fs(tmp_path / "tiny", 96) as tiny:  # room for ~3 s of 16 kHz PCM
        server = start_server(tmp_path / "voice", {"VOICE_RECORDINGS_DIR": str(tiny)})
        try:
            [report] = run_ua(server, "audio;wait:5;dtmf:1;audio;wait:3;hangup", caller=KNOWN)
            assert report["code"] == 200 and not report["error"], report
            call_id = last_call_id(server, KNOWN)
            # The call went on: the key pressed after the disk filled was answered.
            assert wait_for(
                lambda: (
                    ("choice", {"key": "1", "option": "balance"})
                    in server.journal().events(call_id)
                )
            )
            rec = closed_recording(server, call_id)
            assert rec.status == "final"
            assert rec.loss and "not recorded" in rec.loss, rec.loss
            file = path_for(rec, tiny)
            audio, rate = soundfile.read(file, dtype="int16")  # what was recorded is kept
            assert 2.0 < len(audio) / RATE == rec.duration_s < 3.5
            assert hashlib.sha256(file.read_bytes()).hexdigest() == rec.sha256
            note = note_of(server, call_id)
            assert "Incomplete:" in note and "not recorded" in note
            assert wait_for(
                lambda: (
                    server.health()["workers"][0]["counters"].get("recordings_incomplete_total")
                    == 1
                )
            )
            assert scrape(server)["voice_recordings_incomplete_total"] == 1
        finally:
            stop_server(server)


def _identified_call(server: Server) -> int | None:
    with server.session() as session:
        return session.scalar(
            select(Call.id).where(Call.caller == KNOWN, Call.status == "in_progress")
        )


def test_pci_pause_through_the_api_records_silence_and_marks_the_gap(
    server: Server, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    added = subprocess.run(
        [sys.executable, "-m", "voice", "--config", str(REPO / "config.toml")]
        + ["users", "add", "pat", "--role", "supervisor"],
        env={**os.environ, "VOICE_DATA_DIR": str(server.data_dir)},
        capture_output=True,
        timeout=30,
        check=True,
    )
    token = next(w for w in added.stdout.decode().split() if w.startswith("cv_"))
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{server.http_port}/api",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    request.addfinalizer(api.close)
    voice = caller_voice(tmp_path / "voice.wav", 12.0)  # the caller talks all along
    ua = start_ua(
        server, f"audio;say:{voice};wait:9;hangup", tmp_path / "ua.out", caller=KNOWN, timeout=40
    )
    try:
        call_id = wait_for(lambda: _identified_call(server), 20)
        assert call_id
        time.sleep(2.0)
        paused = api.post(f"/calls/{call_id}/recording/pause")
        assert paused.status_code == 200, paused.text
        time.sleep(2.5)
        resumed = api.post(f"/calls/{call_id}/recording/resume")
        assert resumed.status_code == 200, resumed.text
        assert ua.wait(40) == 0, (tmp_path / "ua.out").read_text()[-2000:]
    finally:
        if ua.poll() is None:
            ua.kill()
            ua.wait()
    rec = closed_recording(server, call_id)
    start, end = paused.json()["at_s"], resumed.json()["at_s"]
    assert rec.pauses == [{"start": start, "end": end}]
    assert 2.0 < end - start < 3.5
    audio, _ = soundfile.read(path_for(rec, server.data_dir / "recordings"), dtype="int16")
    # The worker's clock and the recorder's agree within a frame or two: trim 0.1 s each side.
    gap = audio[int((start + 0.1) * RATE) : int((end - 0.1) * RATE)]
    assert len(gap) > RATE and not gap.any()  # digital silence: nothing of either side
    after = audio[int((end + 0.2) * RATE) : int((end + 1.2) * RATE)]
    assert tone_level(after, VOICE_HZ) > 0.1  # the caller is recorded again
    # The pause and resume are in the audit log.
    with server.session() as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.target_id == str(call_id))
        ).all()
    assert {"recording.pause", "recording.resume"} <= set(actions)
    # A finished call cannot be paused: 409, not a silent no-op.
    assert api.post(f"/calls/{call_id}/recording/pause").status_code == 409
