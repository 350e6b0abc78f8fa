"""Right-party verification and the keypad promise over real SIP, in developer mode started
the way the README says (`voice serve --workers 1`, no VOICE_WORKERS_COUNT), so these calls
also prove developer mode answers on the SIP port it announces.

The scripted pjsua2 UA is the caller; what it heard is checked against the clips the server
renders (the same cache), so "heard no amount" is a measurement, not a reading of the log.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import soundfile
from sqlalchemy import select

from accounts.models import CallOutcome
from tests.integration.audio import best_match, match_pieces, received
from tests.integration.conftest import (
    TEST_TTS,
    Server,
    events_of,
    last_call_id,
    run_ua,
    start_server,
    stop_server,
    wait_for,
)
from voice.ivr import say
from voice.ivr.clips import ClipLibrary
from voice.ivr.inbound import balance_answer

KNOWN = "+12125550101"  # demo account 10042, ZIP code 10001 (accounts/demo.py)
FABRIKAM = "+12125550102"  # demo accounts 20001 and 20002, ZIP code 60601
STRANGER = "+14155550199"  # on no account


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("verify"),
        extra_env={"VOICE_IVR_VERIFY": "postal_code"},
        serve_args=("--workers", "1"),
        drop_env=("VOICE_WORKERS_COUNT",),  # config.toml's fleet default, overridden by the flag
    )
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="module")
def clips(server: Server) -> ClipLibrary:
    return ClipLibrary(
        TEST_TTS, server.data_dir / "cache" / "tts", server.data_dir / "prompts",
        "Acme Receivables",
    )  # fmt: skip


def heard(report: dict[str, object]) -> np.ndarray:
    pcm, _ = soundfile.read(str(report["record"]), dtype="int16")
    return pcm


def note_of(server: Server, call_id: int) -> str:
    def body() -> str | None:
        with server.session() as session:
            from accounts.models import Note

            bodies = session.scalars(select(Note.body).where(Note.call_id == call_id)).all()
            # The call's own note (an outcome keyed in the IVR has a note of its own).
            return next((b for b in bodies if "Ended:" in b), None)

    text = wait_for(body, timeout=15)
    assert text, f"no note for call {call_id}"
    return str(text)


def was_heard(audio: np.ndarray, clip: np.ndarray) -> bool:
    """Every 0.5 s piece of `clip` in order (a jitter buffer drops frames: see audio.py)."""
    scores, jump, _ = match_pieces(audio, clip)
    return bool(scores) and min(scores) > 0.6 and jump < 0.1


def assert_no_balance_heard(audio: np.ndarray, clips: ClipLibrary, cents: int) -> None:
    # The "not verified" sentence was heard (the positive control of the negative below) ...
    assert was_heard(audio, clips.render(["verify_failed"]))
    # ... and no clip that tells the balance: the sentence, nor the amount.
    assert best_match(audio, clips.render(["balance_open"]))[0] < 0.5
    assert best_match(audio, clips.render(say.money(cents, "USD")))[0] < 0.5


def verify_results(server: Server, call_id: int) -> list[str]:
    return [d["result"] for kind, d in events_of(server, call_id) if kind == "verify"]


def test_developer_mode_answers_on_its_announced_port(server: Server) -> None:
    health = server.health()
    [worker] = health["workers"]
    assert worker["sip_port"] == server.sip_port
    assert f"SIP on 127.0.0.1:{server.sip_port}" in server.log()


def test_verified_caller_hears_the_balance(
    server: Server, clips: ClipLibrary, tmp_path: Path
) -> None:
    [report] = run_ua(
        server, "audio;dtmf:10001;audio;dtmf:1;audio;wait:12;hangup", caller=KNOWN,
        record=tmp_path / "heard",
    )  # fmt: skip
    assert report["code"] == 200 and not report["error"], report
    call_id = last_call_id(server, KNOWN)
    assert verify_results(server, call_id) == ["verified"]
    ledger = server.ledger()
    account = ledger.account_by_number("10042")
    expected = clips.render(balance_answer(ledger.balance(account.id, dt.date.today()))[0])
    scores, jump, _ = match_pieces(heard(report), expected)
    assert scores and min(scores) > 0.6 and jump < 0.1, scores
    assert "Caller verified by postal code." in note_of(server, call_id)
    # The keys were a secret: the journal holds only their count.
    keys = [d for kind, d in events_of(server, call_id) if kind == "keys"]
    assert keys[0] == {"digits": "*****", "secret": True}


def test_three_wrong_postal_codes_hear_no_amount(
    server: Server, clips: ClipLibrary, tmp_path: Path
) -> None:
    steps = (
        "audio;dtmf:11111;audio;dtmf:22222;audio;dtmf:33333;audio;silence:1200:20;dtmf:1;audio;"
        "wait:3;hangup"
    )
    [report] = run_ua(server, steps, caller=KNOWN, record=tmp_path / "heard")
    assert report["code"] == 200 and not report["error"], report
    call_id = last_call_id(server, KNOWN)
    assert verify_results(server, call_id) == ["wrong", "wrong", "wrong"]
    assert_no_balance_heard(heard(report), clips, 173000)
    note = note_of(server, call_id)
    assert "Caller not verified: 3 wrong postal codes in 3 tries" in note
    assert "balance:" not in note and "invalid key 1" in note


def test_stranger_keying_an_account_number_hears_nothing_about_it(
    server: Server, clips: ClipLibrary, tmp_path: Path
) -> None:
    # The defect as measured: +14155550199 keyed 30003# and heard its 4,250.00 balance.
    steps = (
        "audio;dtmf:30003#;audio;dtmf:11111;audio;dtmf:22222;audio;dtmf:33333;audio;"
        "silence:1200:20;dtmf:1;audio;wait:3;hangup"
    )
    [report] = run_ua(server, steps, caller=STRANGER, record=tmp_path / "heard")
    assert report["code"] == 200 and not report["error"], report
    call_id = last_call_id(server, STRANGER)
    assert_no_balance_heard(heard(report), clips, 425000)
    note = note_of(server, call_id)
    assert "Account 30003 identified by account number on keypad." in note
    assert "Caller not verified" in note and "4,250.00" not in note


def test_sixth_failing_call_from_a_number_is_told_to_try_later(
    server: Server, clips: ClipLibrary, tmp_path: Path
) -> None:
    # Five calls from one number each key a wrong ZIP for account 20002 and hang up ...
    steps = "audio;dtmf:0002;audio;dtmf:99999;wait:1.5;hangup"
    for report in run_ua(server, steps, caller=FABRIKAM, calls=4, timeout=40):
        assert report["code"] == 200 and not report["error"], report
    [report] = run_ua(server, steps, caller=FABRIKAM)
    assert report["code"] == 200 and not report["error"], report
    # ... the sixth is refused a try, and told so.
    [report] = run_ua(
        server,
        "audio;dtmf:0002;audio;silence:1200:20;hangup",
        caller=FABRIKAM,
        record=tmp_path / "h",
    )
    call_id = last_call_id(server, FABRIKAM)
    assert verify_results(server, call_id) == ["locked"]
    assert was_heard(heard(report), clips.render(["verify_locked"]))
    assert "too many failed verifications" in note_of(server, call_id)
    with server.session() as session:
        from accounts.models import AuditEntry

        failed = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "verify.failed")
        ).all()
    assert sum(1 for a in failed if a.detail.get("caller") == FABRIKAM) == 5


def test_keypad_promise_is_read_back_and_stored_once(
    server: Server, clips: ClipLibrary, tmp_path: Path
) -> None:
    today = dt.datetime.now(ZoneInfo("America/New_York")).date()  # account 10042's zone
    when = today + dt.timedelta(days=7)
    steps = (
        f"audio;dtmf:10001;audio;dtmf:4;audio;dtmf:50000#;audio;dtmf:{when:%m%d%Y};audio;"
        "silence:1200:30;dtmf:1;audio;wait:4;hangup"  # the read-back heard whole, then 1
    )
    [report] = run_ua(server, steps, caller=KNOWN, record=tmp_path / "heard", timeout=90)
    assert report["code"] == 200 and not report["error"], report
    call_id = last_call_id(server, KNOWN)
    readback = clips.render(
        ["promise_readback", *say.money(50000, "USD"), "promise_on", *say.date(when)]
    )
    scores, _, _ = match_pieces(heard(report), readback)
    assert scores and min(scores) > 0.6, (scores, received(report))
    with server.session() as session:
        outcomes = session.scalars(select(CallOutcome).where(CallOutcome.call_id == call_id)).all()
    assert [(o.kind, o.amount_cents, o.promise_date, o.user) for o in outcomes] == [
        ("promise_to_pay", 50000, when, "ivr")
    ]
    assert f"promise to pay 500.00 USD by {when.isoformat()}" in note_of(server, call_id)


def test_zero_promise_is_refused_over_sip(server: Server) -> None:
    steps = "audio;dtmf:10001;audio;dtmf:4;audio;dtmf:0#;audio;wait:2;hangup"
    [report] = run_ua(server, steps, caller=KNOWN)
    assert report["code"] == 200 and not report["error"], report
    call_id = last_call_id(server, KNOWN)
    promise = [d["result"] for kind, d in events_of(server, call_id) if kind == "promise"]
    assert promise == ["amount_zero"]
    with server.session() as session:
        stored = select(CallOutcome).where(CallOutcome.call_id == call_id)
        assert session.scalars(stored).all() == []
