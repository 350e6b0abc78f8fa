"""The compliance pages in real headless Chromium, against `voice serve` as a real process, with a
call recorded through SIP: find it by phone, play it, seek from the transcript, verify (match,
then mismatch after a changed byte, as `voice recordings verify` says), hold it through a purge,
read it all back in the audit log; another collector gets 404.

The call is real (a SIP caller on 127.0.0.1, recorded by the worker into a hashed FLAC). Its
transcript is stored through CallJournal.add_transcript, the store the live recogniser uses,
with word times inside the recording: no speech model is needed to test the page.
A bridged part (two channels, a PCI pause) is recorded through the recorder's own classes
(WavWriter, RecordingBook), as voice/calls/media.py does, to check the two waveform lanes.
Screenshots go to tests/output/screens/ (gitignored).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import update

from accounts.db import make_sessions
from accounts.models import Recording
from recordings.book import RecordingBook
from recordings.capture import WavWriter
from recordings.paths import path_for
from tests.integration.chromium import open_chromium, require_chromium, screenshot
from tests.integration.chromium import voice_cli as _cli
from tests.integration.conftest import Server, last_call_id, run_ua, start_server, stop_server
from tests.integration.test_call_recording import closed_recording
from voice.config import from_mapping

pytestmark = pytest.mark.integration

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.expected_conditions import staleness_of  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

KNOWN = "+12125550101"  # account 10042, Dana Whitfield's
PASSWORD = "correct horse battery staple"
WORDS = [("i", 0.5, 0.7), ("paid", 0.8, 1.1), ("the", 1.2, 1.3), ("invoice", 2.2, 2.8)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_chromium()
    server = start_server(tmp_path_factory.mktemp("compliance-pages"))
    try:
        for name, role, collector in (
            ("cora", "compliance", None),
            ("marcus", "collector", "Marcus Lee"),
        ):
            extra = ["--collector", collector] if collector else []
            added = _cli(server, "users", "add", name, "--role", role, *extra, "--password-stdin",
                         stdin=PASSWORD + "\n")  # fmt: skip
            assert added.returncode == 0, added.stderr
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def recording(served: Server) -> Recording:
    report = run_ua(served, "audio;wait:4;hangup", caller=KNOWN)[0]
    assert report["code"] == 200 and not report["error"], report
    call_id = last_call_id(served, KNOWN)
    rec = closed_recording(served, call_id)
    assert rec.status == "final" and (rec.duration_s or 0) > 3
    words = [{"word": w, "start": s, "end": e, "conf": 0.9} for w, s, e in WORDS]
    served.journal().add_transcript(
        call_id, speaker="caller", text=" ".join(w for w, _, _ in WORDS),
        start=WORDS[0][1], end=WORDS[-1][2], confidence=0.9, words=words, recording_id=rec.id,
    )  # fmt: skip
    return rec


@pytest.fixture
def browser() -> Iterator[object]:
    with open_chromium() as driver:
        yield driver


def _shot(driver: object, name: str) -> None:
    screenshot(driver, f"compliance-{name}")


def _login(driver: object, server: Server, name: str) -> None:
    d: object = driver
    d.get(f"http://127.0.0.1:{server.http_port}/login")  # type: ignore[attr-defined]
    d.find_element(By.ID, "name").send_keys(name)  # type: ignore[attr-defined]
    d.find_element(By.ID, "password").send_keys(PASSWORD)  # type: ignore[attr-defined]
    d.find_element(By.CSS_SELECTOR, "form.login button").click()  # type: ignore[attr-defined]
    WebDriverWait(d, 10).until(lambda x: "/login" not in x.current_url)


def _post(driver: object, button: str, by: str = By.ID) -> None:
    """Click a form's button and wait for the page it leads to (the old one goes stale)."""
    old = driver.find_element(By.TAG_NAME, "html")  # type: ignore[attr-defined]
    driver.find_element(by, button).click()  # type: ignore[attr-defined]
    WebDriverWait(driver, 15).until(staleness_of(old))
    WebDriverWait(driver, 15).until(
        lambda x: x.execute_script("return document.readyState") == "complete"
    )


def _current_time(driver: object) -> float:
    script = "return document.getElementById('player').currentTime"
    return float(driver.execute_script(script))  # type: ignore[attr-defined]


def test_compliance_finds_plays_verifies_holds_and_audits(
    served: Server, recording: Recording, browser: object
) -> None:
    d: object = browser
    base = f"http://127.0.0.1:{served.http_port}"
    _login(d, served, "cora")
    d.get(f"{base}/recordings")  # type: ignore[attr-defined]
    d.find_element(By.ID, "f-phone").send_keys("(212) 555-0101")  # type: ignore[attr-defined]
    _post(d, "form.filters button", By.CSS_SELECTOR)
    link = WebDriverWait(d, 10).until(
        lambda x: x.find_element(By.CSS_SELECTOR, f'#results a[href="/recordings/{recording.id}"]')
    )
    _shot(d, "1-search")
    link.click()
    WebDriverWait(d, 10).until(lambda x: x.find_elements(By.ID, "player"))
    WebDriverWait(d, 10).until(
        lambda x: x.find_element(By.ID, "waveform").get_attribute("data-loaded") == "yes"
    )

    # Plays: currentTime advances.
    d.execute_script("document.getElementById('player').play()")  # type: ignore[attr-defined]
    WebDriverWait(d, 10, poll_frequency=0.1).until(lambda x: _current_time(x) > 0.5)
    _shot(d, "2-playing")
    # Click-to-seek: the word's start, within 0.3 s, and the word is highlighted.
    word = d.find_element(By.XPATH, "//button[@class='w' and text()='invoice']")  # type: ignore[attr-defined]
    word.click()
    time.sleep(0.1)
    assert abs(_current_time(d) - 2.2) < 0.3, _current_time(d)
    WebDriverWait(d, 5).until(lambda x: "playing" in (word.get_attribute("class") or ""))
    _shot(d, "3-seeked")
    d.execute_script("document.getElementById('player').pause()")  # type: ignore[attr-defined]

    # Verify: a match; then one byte changed on disk: a mismatch, as the command line says.
    _post(d, "verify")
    assert d.find_element(By.ID, "verify-result").text == "match"  # type: ignore[attr-defined]
    audio = path_for(recording, served.data_dir / "recordings")
    data = bytearray(audio.read_bytes())
    data[len(data) // 2] ^= 0x01
    audio.write_bytes(bytes(data))
    _post(d, "verify")
    assert d.find_element(By.ID, "verify-result").text == "mismatch"  # type: ignore[attr-defined]
    _shot(d, "4-mismatch")
    cli = _cli(served, "recordings", "verify")
    assert cli.returncode == 1 and str(recording.id) in cli.stdout + cli.stderr, cli

    # A legal hold keeps the file through a purge, even past retention.
    d.find_element(By.ID, "reason").send_keys("Matter 2026-17")  # type: ignore[attr-defined]
    _post(d, "hold-button")
    assert "On hold" in d.find_element(By.ID, "hold-state").text  # type: ignore[attr-defined]
    _shot(d, "5-hold")
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=4 * 365)
    with served.engine.begin() as conn:
        conn.execute(
            update(Recording)
            .where(Recording.id == recording.id)
            .values(started_at=long_ago, retain_until=long_ago + dt.timedelta(days=1096))
        )
    purge = _cli(served, "recordings", "purge")
    assert purge.returncode == 0, purge.stderr
    assert audio.exists()

    # The audit log lists every one of these actions under her name.
    d.get(f"{base}/audit?user=cora&target=recording:{recording.id}")  # type: ignore[attr-defined]
    table = d.find_element(By.ID, "entries").text  # type: ignore[attr-defined]
    for action in ("recording.read", "recording.play", "recording.peaks", "recording.verify",
                   "recording.hold"):  # fmt: skip
        assert action in table, action
    d.get(f"{base}/audit?user=cora&action=recordings.search")  # type: ignore[attr-defined]
    assert "(212) 555-0101" in d.find_element(By.ID, "entries").text  # type: ignore[attr-defined]
    _shot(d, "6-audit")


def test_another_collectors_recording_is_not_found(
    served: Server, recording: Recording, browser: object
) -> None:
    d: object = browser
    _login(d, served, "marcus")
    d.get(f"http://127.0.0.1:{served.http_port}/recordings/{recording.id}")  # type: ignore[attr-defined]
    assert d.find_element(By.TAG_NAME, "h1").text == "Not found"  # type: ignore[attr-defined]
    assert not d.find_elements(By.ID, "player")  # type: ignore[attr-defined]
    _shot(d, "7-collector-404")


def _bridged_part(server: Server, call_id: int) -> int:
    """The bridged part of a call, recorded the way voice/calls/media.py records it: a
    two-channel WavWriter (customer left, collector right) fed 20 ms frames, a PCI pause in
    the middle marked on the row, then closed into a hashed FLAC by the RecordingBook."""
    cfg = from_mapping({"data": {"dir": str(server.data_dir)}}, {})
    book = RecordingBook(make_sessions(server.engine), cfg)
    rid, wav = book.open(call_id, channels=2)
    writer = WavWriter(wav, 2)
    t = np.arange(320) / 16000
    customer = (9000 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()
    collector = (6000 * np.sin(2 * np.pi * 500 * t)).astype("<i2").tobytes()
    left, right = writer.sink(0), writer.sink(1)
    for frame in range(150):  # 3 s: customer talks first, collector second, paused 1.0-1.6 s
        if frame == 50:
            writer.paused = True
            book.mark_pause(rid, 1.0, True)
        if frame == 80:
            writer.paused = False
            book.mark_pause(rid, 1.6, False)
        left(customer if frame < 75 else bytes(640))
        right(collector if frame >= 75 else bytes(640))
        time.sleep(0.02)  # the media clock's pace: a pause applies to frames as they are drained
    writer.close()
    rec = book.close(rid)
    assert rec.status == "final" and rec.channels == 2 and rec.pauses
    return rid


def _lane_colours(driver: object) -> dict[str, list[str]]:
    """Per lane, the colour at 10 points across, 4 px above its middle: inside the bar of a
    channel that is talking, outside the 1 px line drawn for silence."""
    script = """
      const c = document.getElementById('waveform'), ctx = c.getContext('2d');
      const out = {}, lanes = 2, h = c.height / lanes;
      for (let lane = 0; lane < lanes; lane++) {
        out[lane] = [];
        for (let i = 0; i < 10; i++) {
          const x = Math.floor((i + 0.5) * c.width / 10), y = Math.floor(lane * h + h / 2) - 4;
          const p = ctx.getImageData(x, y, 1, 1).data;
          out[lane].push(p[0] + ',' + p[1] + ',' + p[2]);
        }
      }
      return out;
    """
    return driver.execute_script(script)  # type: ignore[attr-defined,no-any-return]


def test_a_bridged_part_shows_two_lanes_with_the_pause_as_a_gap(
    served: Server, recording: Recording, browser: object
) -> None:
    rid = _bridged_part(served, recording.call_id)
    d: object = browser
    _login(d, served, "cora")
    d.get(f"http://127.0.0.1:{served.http_port}/recordings/{rid}")  # type: ignore[attr-defined]
    canvas = WebDriverWait(d, 10).until(lambda x: x.find_element(By.ID, "waveform"))
    WebDriverWait(d, 10).until(lambda x: canvas.get_attribute("data-loaded") == "yes")
    assert "customer above, collector below" in (canvas.get_attribute("aria-label") or "")
    colours = _lane_colours(d)
    blue, green, gap = "11,92,173", "26,127,55", "228,224,212"
    # 10 points over 3 s: 0.15 s, 0.45 s, ... 2.85 s; the pause is 1.0-1.6 s (points 3 and 4).
    assert colours["0"][:3] == [blue] * 3 and colours["1"][6:] == [green] * 4, colours
    assert colours["0"][3:5] == [gap] * 2 == colours["1"][3:5], colours
    assert blue not in colours["0"][6:] and green not in colours["1"][:3], colours
    # The call's other recording's words are not this one's transcript.
    assert "invoice" not in d.find_element(By.ID, "main").text  # type: ignore[attr-defined]
    _shot(d, "8-two-lanes")
