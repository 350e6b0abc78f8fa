"""The inbound IVR over real SIP: sipp with RFC 2833 pcaps, and the scripted pjsua2 UA."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
import soundfile

from tests.integration.audio import match_pieces
from tests.integration.conftest import (
    TEST_TTS,
    Server,
    last_call_id,
    require_sipp,
    run_ua,
    wait_for,
)
from voice.ivr.clips import SAMPLE_RATE, ClipLibrary
from voice.ivr.inbound import balance_answer

KNOWN = "+12125550101"  # demo account 10042 (accounts/demo.py)
UNKNOWN = "+13125550142"  # on no account


def choices(server: Server, call_id: int) -> list[str]:
    return [d["option"] for kind, d in server.journal().events(call_id) if kind == "choice"]


def finished_note(server: Server, call_id: int) -> str:
    journal = server.journal()

    def note() -> str | None:
        notes = [
            n
            for n in journal.notes_for_account(account_id(server, "10042"))
            if n.call_id == call_id
        ]
        return notes[0].body if notes else None

    body = wait_for(note, timeout=10)
    assert body, f"no note for call {call_id}"
    return str(body)


def account_id(server: Server, number: str) -> int:
    account = server.ledger().account_by_number(number)
    assert account is not None
    return account.id


def test_sipp_rfc2833_keys_drive_the_menu(server: Server, tmp_path: Path) -> None:
    sipp = require_sipp()
    out = subprocess.run(
        [
            sipp,
            "-sf",
            "inbound_dtmf_2833.xml",
            "-key",
            "caller",
            KNOWN,
            "-s",
            "ivr",
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-mp",
            "46000",
            "-m",
            "1",
            "-l",
            "1",
            "-timeout",
            "40s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(tmp_path / "sipp-errors.log"),
            f"127.0.0.1:{server.sip_port}",
        ],
        cwd=Path(__file__).resolve().parents[1] / "sipp",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout.decode()[-2000:] + out.stderr.decode()[-2000:]
    call_id = last_call_id(server, KNOWN)
    assert wait_for(lambda: len(choices(server, call_id)) == 3)
    assert choices(server, call_id) == ["balance", "last_invoice", "last_payment"]
    events = server.journal().events(call_id)
    assert ("identified", {"account": "10042", "how": "caller ID"}) in events
    note = finished_note(server, call_id)
    assert "Account 10042 identified by caller ID." in note
    assert "balance: open" in note and "last invoice: invoice" in note
    assert "last payment:" in note
    assert "Ended: caller hung up." in note


def test_pjsua_caller_hears_the_balance(server: Server, tmp_path: Path) -> None:
    [report] = run_ua(
        server, "audio;dtmf:1;audio;wait:12;hangup", caller=KNOWN, record=tmp_path / "heard"
    )
    assert report["code"] == 200 and not report["error"], report
    heard, rate = soundfile.read(report["record"], dtype="int16")
    assert rate == SAMPLE_RATE

    # What the caller must have heard: the balance answer rendered from the same clip cache.
    ledger = server.ledger()
    account = ledger.account_by_number("10042")
    balance = ledger.balance(account.id, dt.date.today())
    clips = ClipLibrary(
        TEST_TTS,
        server.data_dir / "cache" / "tts",
        server.data_dir / "prompts",
        "Acme Receivables",
    )
    expected = clips.render(balance_answer(balance)[0])
    scores, jump, offset = match_pieces(heard, expected)
    # Every 0.5 s piece must be there, in order. Measured: a clean piece scores > 0.99; one
    # holding a 20 ms frame the caller's jitter buffer concealed ~0.88; on a CPU-starved machine
    # (load 14) the worst piece of a heard answer scored 0.67-0.70; a different word ~0.1. So:
    # every piece above 0.6 (a different word fails it) and nearly all of them near-perfect.
    assert scores and min(scores) > 0.6, f"balance answer not heard (pieces {scores})"
    assert sorted(scores)[len(scores) // 10] > 0.85, f"answer too damaged (pieces {scores})"
    assert jump < 0.1, f"answer pieces heard out of order or far apart ({jump:.3f} s)"

    # The same check against a different amount must fail, or the test proves nothing.
    wrong = type(balance)(balance.open_cents + 4_321_00, balance.past_due_cents, balance.currency)
    wrong_scores, wrong_jump, _ = match_pieces(heard, clips.render(balance_answer(wrong)[0]))
    assert min(wrong_scores) < 0.5 or wrong_jump >= 0.1, (wrong_scores, wrong_jump)

    # And it came after the key press.
    [dtmf_at] = [t for t, kind, _ in report["events"] if kind == "dtmf"]
    assert offset / SAMPLE_RATE > dtmf_at


@pytest.mark.parametrize("method", ["info", "rfc2833"])
def test_unknown_caller_enters_account_number(server: Server, method: str) -> None:
    [report] = run_ua(
        server, "audio;dtmf:30003#;wait:1.5;dtmf:1;wait:2;hangup", caller=UNKNOWN, dtmf=method
    )
    assert report["code"] == 200 and not report["error"], report
    call_id = last_call_id(server, UNKNOWN)
    assert wait_for(lambda: choices(server, call_id) == ["balance"])
    events = server.journal().events(call_id)
    assert ("lookup", {"by": "caller_id", "matches": 0}) in events
    assert ("keys", {"digits": "30003"}) in events
    assert ("identified", {"account": "30003", "how": "account number on keypad"}) in events
