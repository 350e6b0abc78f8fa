"""PcmPlayer tells its listener what it said: a real pjsua2 port, frames pulled by hand.

The player runs on pjmedia's clock in a call; here the test is the clock, calling
onFrameRequested as the conference bridge would, with a null sound device and no call.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import numpy as np
import pjsua2 as pj
import pytest

from voice.audio import FRAME_BYTES, FRAME_SAMPLES, Rendered, Span
from voice.sip.player import PcmPlayer


@pytest.fixture(scope="module")
def players() -> Iterator[list[PcmPlayer]]:
    """Players made by a test; kept until the library goes (a port freed any earlier aborts)."""
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0  # as voice/sip/endpoint.py: no pjsua2 thread of its own
    cfg.medConfig.clockRate = cfg.medConfig.sndClockRate = 16000
    cfg.logConfig.level = 0
    cfg.logConfig.consoleLevel = 0
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    made: list[PcmPlayer] = []
    yield made
    ep.audDevManager().setNoDev()  # as the engine's shutdown: clock stopped, then ports freed
    made.clear()
    gc.collect()
    ep.libDestroy()


class Listener:
    def __init__(self) -> None:
        self.log: list[Any] = []

    def __call__(self, pcm: bytes) -> None:
        self.log.append("frame" if pcm.strip(b"\0") else "quiet")

    def saying(self, spans: tuple[Span, ...]) -> None:
        self.log.append(("saying", spans[0].text))

    def said(self) -> None:
        self.log.append("said")


def prompt(text: str, frames: int) -> Rendered:
    out = np.ones(frames * FRAME_SAMPLES, dtype=np.int16).view(Rendered)
    out.spans = (Span(text, 0, len(out)),)
    return out


def pull(player: PcmPlayer, frames: int) -> None:
    for _ in range(frames):
        frame = pj.MediaFrame()
        player.onFrameRequested(frame)
        assert frame.size == FRAME_BYTES


def test_each_prompt_is_told_around_its_frames(players: list[PcmPlayer]) -> None:
    player = PcmPlayer("test-player")
    players.append(player)
    heard = Listener()
    player.listener = heard
    done: list[str] = []
    player.play(prompt("hello", 2), lambda: done.append("hello"))
    pull(player, 3)
    assert heard.log == [("saying", "hello"), "frame", "frame", "said", "quiet"]
    assert done == ["hello"]

    heard.log.clear()
    player.play(prompt("menu", 5), lambda: None)
    pull(player, 2)
    player.play(prompt("answer", 1), lambda: None)  # replaced part-way (a key's answer)
    pull(player, 1)
    player.play(np.ones(FRAME_SAMPLES, dtype=np.int16), lambda: None)  # a tone says nothing
    pull(player, 1)
    player.play(prompt("bye", 4), lambda: None)
    pull(player, 1)
    player.stop()  # barge-in: the cut prompt is told before the next frame
    pull(player, 1)
    assert heard.log == [
        ("saying", "menu"), "frame", "frame",
        "said", ("saying", "answer"), "frame", "said",
        "frame",
        ("saying", "bye"), "frame",
        "said", "quiet",
    ]  # fmt: skip


def test_a_plain_sink_listener_still_hears_every_frame(players: list[PcmPlayer]) -> None:
    player = PcmPlayer("test-player-2")
    players.append(player)
    frames: list[bytes] = []
    player.listener = frames.append
    player.play(prompt("hello", 2), lambda: None)
    pull(player, 3)
    assert [bool(f.strip(b"\0")) for f in frames] == [True, True, False]


def test_on_start_fires_once_as_the_first_frame_of_its_audio_goes_out(
    players: list[PcmPlayer],
) -> None:
    player = PcmPlayer("test-player-3")
    players.append(player)
    started: list[str] = []
    player.play(prompt("menu", 3), lambda: None, lambda: started.append("menu"))
    assert started == []  # queued is not heard: the bridge has not asked for a frame yet
    pull(player, 1)
    assert started == ["menu"]
    pull(player, 3)
    player.play(prompt("cut", 2), lambda: None, lambda: started.append("cut"))
    player.stop()  # cut before its first frame: never heard, so never started
    player.play(prompt("replaced", 2), lambda: None, lambda: started.append("replaced"))
    player.play(prompt("answer", 2), lambda: None, lambda: started.append("answer"))
    pull(player, 3)
    assert started == ["menu", "answer"]
