"""A conference-bridge port that hands every 20 ms frame it hears to a sink: the IVR's ear.

`onFrameReceived` runs on pjmedia's clock thread. It copies the frame and calls the sink, which
must only queue (e.g. `SpeechStream.feed`). A frame without audio (the bridge sends none while
its sources are silent or the jitter buffer is empty) is handed on as digital silence, so the
sink's sample count stays the call's clock.

A tap may feed several sinks (live speech, a bridged call's stereo recording, a voicemail);
`sinks` is a tuple replaced whole, so the media thread always sees a consistent set.

Like players, taps are reused across calls and never destroyed while the clock runs (see
voice/sip/conference.py): between calls there are no sinks and frames are dropped.
"""

from __future__ import annotations

import logging

import pjsua2 as pj

from voice.audio import FRAME_BYTES, FRAME_TIME, SAMPLE_RATE, Sink

log = logging.getLogger(__name__)

_SILENCE = bytes(FRAME_BYTES)


class FrameTap(pj.AudioMediaPort):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.sinks: tuple[Sink, ...] = ()
        self.frames = 0
        self._silence = pj.ByteVector(_SILENCE)
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, SAMPLE_RATE, 1, int(FRAME_TIME * 1_000_000), 16)
        self.createPort(name, fmt)

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:  # noqa: N802 (pjsua2 name)
        sinks = self.sinks
        if not sinks:
            return
        try:
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and frame.size == FRAME_BYTES:
                pcm = bytes(frame.buf)
            else:
                pcm = _SILENCE
            self.frames += 1
            for sink in sinks:
                sink(pcm)
        except Exception:  # never let an exception escape into the media thread
            log.exception("tap frame failed")

    def onFrameRequested(self, frame: pj.MediaFrame) -> None:  # noqa: N802
        # A tap is only a sink; should anything listen to it, it hears silence.
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        frame.buf = self._silence
        frame.size = FRAME_BYTES
