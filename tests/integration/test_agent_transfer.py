"""Agent transfer on real SIP: the customer (scripted pjsua2 UA) presses 0, the collector's
softphone (baresip) rings; bridged with a two-channel recording, or voicemail.

Developer mode (one worker, no Kamailio): the collector is reached at their configured
`sip_uri`, which points at baresip on 127.0.0.1. Each side sends its own deterministic
band-limited noise (the customer 16 kHz over G722, baresip an 8 kHz file over PCMU), so a
channel can be matched to exactly one sender.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
from sqlalchemy import select, update

from accounts.models import CallOutcome, Collector, Note, Recording
from recordings.paths import path_for
from tests.integration.audio import best_match
from tests.integration.conftest import (
    PJUA,
    TEST_TTS,
    Server,
    events_of,
    free_port,
    last_call_id,
    run_ua,
    start_server,
    stop_server,
    wait_for,
    write_wav,
)
from tests.integration.test_kamailio import baresip_config
from voice.ivr.clips import ClipLibrary
from voice.ivr.prompts import PROMPTS

RATE = 16000
KNOWN = "+12125550101"  # account 10042, collector Dana Whitfield
RING_TIMEOUT = 3.0


def noise(seconds: float, rate: int, seed: int, level: float = 3000.0) -> np.ndarray:
    """Deterministic noise band-limited to 300-3400 Hz (inside both G722 and PCMU)."""
    n = int(seconds * rate)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    pcm = np.fft.irfft(spectrum, n)
    return (pcm / np.sqrt(np.mean(pcm**2)) * level).astype(np.int16)


def upsample(pcm: np.ndarray, factor: int) -> np.ndarray:
    """Ideal (FFT) resampling of a band-limited signal by an integer factor."""
    spectrum = np.fft.rfft(pcm.astype(np.float64))
    padded = np.zeros(len(pcm) * factor // 2 + 1, dtype=complex)
    padded[: len(spectrum)] = spectrum
    return np.fft.irfft(padded, len(pcm) * factor) * factor


CUSTOMER_SOUND = noise(5.0, RATE, seed=1)
COLLECTOR_SOUND = noise(90.0, 8000, seed=2)  # baresip hangs up when its file ends


def require_baresip() -> None:
    if shutil.which("baresip") is None:
        pytest.fail("baresip (Debian baresip-core) is not installed: run `make test`")


class Softphone:
    """baresip-core headless as a collector's phone: no sound card, a WAV as microphone, a
    JSON netstring control port (`sndcode`), auto or manual answer, registered or not."""

    def __init__(
        self,
        folder: Path,
        user: str,
        *,
        answer: str = "auto",
        registrar: tuple[int, str] | None = None,
        max_calls: int | None = None,
    ) -> None:
        """`max_calls`: baresip refuses calls beyond it with 486 Busy Here (its default is 4)."""
        folder.mkdir(parents=True)
        self.folder, self.user = folder, user
        self.sip_port = free_port()
        self.ctrl_port = free_port(socket.SOCK_STREAM)
        source = write_wav(folder / "voice.wav", COLLECTOR_SOUND, 8000)
        config = baresip_config(self.sip_port, source, self.ctrl_port)
        if max_calls is not None:
            config += f"call_max_calls {max_calls}\n"
        (folder / "config").write_text(config)
        if registrar is None:
            account = f"<sip:{user}@127.0.0.1:{self.sip_port}>;regint=0;answermode={answer}"
        else:
            port, password = registrar
            account = (
                f"<sip:{user}@127.0.0.1:{port}>;auth_pass={password};answermode={answer};regint=60"
            )
        (folder / "accounts").write_text(account + "\n")
        self.log = folder / "out.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["baresip", "-f", str(folder)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=folder,
                start_new_session=True,
            )
        assert wait_for(lambda: self._ctrl_up(), 5.0), self.text()

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@127.0.0.1:{self.sip_port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def _ctrl_up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=0.2):
                return True
        except OSError:
            return False

    def command(self, command: str, params: str = "") -> None:
        body = json.dumps({"command": command, "params": params, "token": "t"}).encode()
        with socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=2) as s:
            s.sendall(b"%d:%s," % (len(body), body))

    def keys(self, digits: str) -> None:
        for digit in digits:
            self.command("sndcode", digit)
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("agents"),
        {"VOICE_AGENTS_RING_TIMEOUT": str(RING_TIMEOUT), "VOICE_AGENTS_TRY_TEAM": "false"},
    )
    try:
        yield srv
    finally:
        stop_server(srv)


def point_collector(server: Server, name: str, uri: str) -> None:
    with server.session() as session, session.begin():
        session.execute(update(Collector).where(Collector.name == name).values(sip_uri=uri))


def recordings_of(server: Server, call_id: int) -> list[Recording]:
    with server.session() as session:
        rows = list(
            session.scalars(
                select(Recording).where(Recording.call_id == call_id).order_by(Recording.id)
            )
        )
        for row in rows:
            session.expunge(row)
        return rows


def closed(server: Server, call_id: int, count: int, timeout: float = 25.0) -> list[Recording]:
    def done() -> list[Recording] | None:
        rows = recordings_of(server, call_id)
        return rows if len(rows) >= count and all(r.status != "recording" for r in rows) else None

    rows = wait_for(done, timeout)
    assert rows, (
        f"recordings of call {call_id}: {recordings_of(server, call_id)}\n" + (server.log()[-3000:])
    )
    return rows  # type: ignore[return-value]


def loud_pieces(channel: np.ndarray, seconds: float = 1.0, count: int = 3) -> list[np.ndarray]:
    """Up to `count` non-overlapping windows of `channel` with sound throughout (each tenth)."""
    size = int(seconds * RATE)
    pieces = []
    for start in range(0, len(channel) - size, size):
        piece = channel[start : start + size].astype(np.float64)
        tenths = piece[: size - size % 10].reshape(10, -1)
        if np.sqrt(np.mean(tenths**2, axis=1)).min() > 800:
            pieces.append(piece)
        if len(pieces) == count:
            break
    return pieces


def assert_own_party(own: list[float], other: list[float]) -> None:
    """A channel's pieces are found in what its own party sent, and not in the other's.

    A clean piece scores 1.0 and the other party's audio ~0.06. Under load a piece holding a
    frame the receiving jitter buffer dropped or concealed scores less: the samples after the
    gap are 20 ms off the alignment found for the piece, so a drop mid-piece costs about half
    (0.73 in tests/integration/test_inbound_call.py, 0.566 in a loaded CI run). So: every piece
    above 0.5, the median near-perfect, and the other party's audio nowhere near either.
    """
    assert own and min(own) > 0.5, (own, other)
    assert sorted(own)[len(own) // 2] > 0.9, (own, other)
    assert max(other) < 0.3, (own, other)


def scores(pieces: list[np.ndarray], source: np.ndarray) -> list[float]:
    # Quiet around the source: a piece that runs past the sender's first or last sample (the
    # recording went quiet there too) still lines up with what was sent.
    pad = np.zeros(RATE // 2, dtype=source.dtype)
    padded = np.concatenate([pad, source, pad])
    return [round(best_match(padded, piece)[0], 3) for piece in pieces]


def prompt_seconds(key: str, tmp: Path) -> float:
    clips = ClipLibrary(TEST_TTS, tmp / "tts", tmp / "prompts", "Acme Receivables")
    return len(clips.render([key])) / RATE


def test_transfer_answered_bridges_and_records_two_channels(
    dev_server: Server, tmp_path: Path
) -> None:
    require_baresip()
    phone = Softphone(tmp_path / "dana", "dana")
    point_collector(dev_server, "Dana Whitfield", phone.uri)
    said = write_wav(tmp_path / "customer.wav", CUSTOMER_SOUND, RATE)
    outcome_keys: list[str] = []
    try:
        # Menu, 0; bridged within a second or two (baresip answers at once); the customer
        # speaks 5 s, stays 6 s more (the collector keys an outcome meanwhile), hangs up.
        steps = f"audio;dtmf:0;wait:3;say:{said};wait:11;hangup"

        def key_outcome() -> None:
            if wait_for(lambda: "Call established" in phone.text(), 20, 0.1):
                time.sleep(7.0)  # within the customer's 6 s of quiet
                phone.keys("*1#")
                outcome_keys.append("*1#")

        keyer = threading.Thread(target=key_outcome)
        keyer.start()
        (report,) = run_ua(dev_server, steps, caller=KNOWN, timeout=45)
        keyer.join(30)
    finally:
        phone.stop()
    assert not report["error"], report
    call_id = last_call_id(dev_server, KNOWN)
    rows = closed(dev_server, call_id, 2)
    stereo = [r for r in rows if r.channels == 2]
    assert len(stereo) == 1, rows
    rec = stereo[0]
    assert (rec.kind, rec.format, rec.status) == ("call", "flac", "final")
    assert rec.sha256 and rec.duration_s and rec.duration_s > 8, rec.duration_s
    audio, rate = soundfile.read(
        path_for(rec.path, dev_server.data_dir / "recordings"), dtype="int16"
    )
    assert rate == RATE and audio.shape[1] == 2
    left, right = audio[:, 0], audio[:, 1]
    collector_16k = upsample(COLLECTOR_SOUND, 2)
    left_pieces, right_pieces = loud_pieces(left, count=5), loud_pieces(right, count=5)
    assert len(left_pieces) >= 2 and len(right_pieces) >= 3, (len(left_pieces), len(right_pieces))
    # Each channel is found in what its own party sent ...
    left_own, right_own = scores(left_pieces, CUSTOMER_SOUND), scores(right_pieces, collector_16k)
    # ... and not in what the other party sent (the wrong pairing fails).
    left_other, right_other = (
        scores(left_pieces, collector_16k),
        scores(right_pieces, CUSTOMER_SOUND),
    )
    print("left own/other", left_own, left_other, "right own/other", right_own, right_other)
    assert_own_party(left_own, left_other)
    assert_own_party(right_own, right_other)
    kinds = [k for k, _ in events_of(dev_server, call_id)]
    for kind in (
        "agent_transfer",
        "agent_ringing",
        "agent_answered",
        "agent_bridged",
        "agent_ended",
    ):
        assert kind in kinds, kinds
    with dev_server.session() as session:
        note = session.scalar(select(Note.body).where(Note.call_id == call_id, Note.kind == "call"))
        outcome = session.scalar(select(CallOutcome).where(CallOutcome.call_id == call_id))
    assert note and "agent: connected to Dana Whitfield" in note, note
    assert f"Recording {rec.id}:" in note and "2 channels" in note, note
    # The collector's *1# marked the call; the customer received none of those keys.
    assert outcome_keys == ["*1#"]
    assert outcome is not None and outcome.kind == "reached", events_of(dev_server, call_id)
    assert not [e for e in report["events"] if e[1] == "dtmf_in"], report["events"]


def test_no_answer_then_voicemail_with_the_message(dev_server: Server, tmp_path: Path) -> None:
    require_baresip()
    phone = Softphone(tmp_path / "dana", "dana", answer="manual")
    point_collector(dev_server, "Dana Whitfield", phone.uri)
    message = write_wav(tmp_path / "message.wav", CUSTOMER_SOUND[: 3 * RATE], RATE)
    greeting = prompt_seconds("voicemail_greeting", tmp_path)
    try:
        start = RING_TIMEOUT + greeting + 2.0  # after the beep
        steps = f"audio;dtmf:0;wait:{start:.1f};say:{message};wait:4;dtmf:#;expect_end:20"
        (report,) = run_ua(dev_server, steps, caller=KNOWN, timeout=60)
    finally:
        phone.stop()
    assert not report["error"], report
    assert "voicemail_thanks" in PROMPTS
    call_id = last_call_id(dev_server, KNOWN)
    check_voicemail(dev_server, call_id, "did not answer")


def test_busy_collector_goes_to_voicemail(dev_server: Server, tmp_path: Path) -> None:
    port = free_port()
    busy = subprocess.Popen(
        [sys.executable, str(PJUA), "--answer", "--calls", "0", "--sip-port", str(port)]
        + ["--rtp-port", "33900", "--steps", "wait:1", "--timeout", "40"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    point_collector(dev_server, "Dana Whitfield", f"sip:dana@127.0.0.1:{port}")
    message = write_wav(tmp_path / "message.wav", CUSTOMER_SOUND[: 3 * RATE], RATE)
    greeting = prompt_seconds("voicemail_greeting", tmp_path)
    try:
        time.sleep(1.0)
        start = greeting + 2.0
        steps = f"audio;dtmf:0;wait:{start:.1f};say:{message};wait:4;hangup"
        (report,) = run_ua(dev_server, steps, caller=KNOWN, timeout=60)
    finally:
        busy.kill()
        busy.wait()
    assert not report["error"], report
    call_id = last_call_id(dev_server, KNOWN)
    check_voicemail(dev_server, call_id, "was busy (486)")


def check_voicemail(server: Server, call_id: int, why: str) -> None:
    rows = closed(server, call_id, 2)
    (vm,) = [r for r in rows if r.kind == "voicemail"]
    assert (vm.channels, vm.format, vm.status) == (1, "flac", "final"), vm
    assert vm.sha256 and vm.duration_s and 3.0 < vm.duration_s < 9.0, vm.duration_s
    audio, _ = soundfile.read(path_for(vm.path, server.data_dir / "recordings"), dtype="int16")
    pieces = loud_pieces(audio, 0.5, 3)
    assert pieces, "the voicemail holds no sound"
    own = scores(pieces, CUSTOMER_SOUND[: 3 * RATE])
    assert min(own) > 0.8, own
    with server.session() as session:
        note = session.scalars(
            select(Note).where(Note.call_id == call_id, Note.kind == "voicemail")
        ).one()
        call_note = session.scalar(
            select(Note.body).where(Note.call_id == call_id, Note.kind == "call")
        )
    assert "Voicemail for Dana Whitfield from +12125550101 on account 10042" in note.body
    assert why in note.body and f"Recording {vm.id}:" in note.body, note.body
    assert note.author == "voicemail"
    assert call_note and "agent: voicemail of" in call_note, call_note
    kinds = [k for k, _ in events_of(server, call_id)]
    assert "voicemail" in kinds, kinds
