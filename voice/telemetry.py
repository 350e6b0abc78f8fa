"""What a call worker measures for `/metrics`, as prometheus_client instruments.

Workers are separate processes. The supervisor starts the zygote with PROMETHEUS_MULTIPROC_DIR
set (voice/metrics.py), so prometheus_client keeps each process's values in its own mmapped file
there (a forked worker notices its new pid and opens its own files) and `/metrics` sums the
files. Without the variable (unit tests, one-off commands) the same instruments count in memory.

Observing costs a lock and a write into an mmapped page, no system call: cheap enough for the
pjsua2 owner thread and the media clock thread.
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable

from prometheus_client import Counter, Histogram

# Seconds. An inbound IVR call is answered in milliseconds; a softphone's call rings until
# the worker has checked it; an outbound call rings until someone picks up.
ANSWER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60)
# What a caller waits for after pressing a key or falling silent; above ~1 s it feels broken.
REPLY_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)

ANSWER_SECONDS = Histogram(
    "voice_call_answer_seconds",
    "INVITE to 200 OK: received to sent (inbound), sent to received (outbound).",
    ["direction"],
    buckets=ANSWER_BUCKETS,
)
for _direction in ("inbound", "outbound"):  # both series from the start, at 0
    ANSWER_SECONDS.labels(_direction)
KEY_TO_AUDIO_SECONDS = Histogram(
    "voice_key_to_audio_seconds",
    "The key that answered a prompt to the first audio frame of the IVR's reply.",
    buckets=REPLY_BUCKETS,
)
SPEECH_TO_AUDIO_SECONDS = Histogram(
    "voice_speech_to_audio_seconds",
    "End of the caller's spoken menu answer to the first audio frame of the IVR's reply.",
    buckets=REPLY_BUCKETS,
)

# Seconds a live recogniser's result comes after the audio that ended its utterance arrived:
# under ~0.2 s it keeps up; growing, its queue is backing up and audio will soon be dropped.
LAG_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30)
ASR_LAG_SECONDS = Histogram(
    "voice_asr_lag_seconds",
    "A live recogniser's result after the audio that ended its utterance reached it.",
    ["mode"],
    buckets=LAG_BUCKETS,
)
for _mode in ("transcript", "grammar"):
    ASR_LAG_SECONDS.labels(_mode)
ASR_DROPPED_SECONDS = Counter(
    "voice_asr_dropped_audio_seconds",
    "Call audio a live recogniser could not take (its queue full): the after-call job redoes it.",
)

# The worker counters its health report has always carried, by key.
_COUNTED = {
    "calls_answered": Counter("voice_calls_answered", "Calls answered by the workers."),
    "calls_placed": Counter("voice_calls_placed", "Calls placed by the workers."),
    "recordings_total": Counter("voice_recordings", "Recordings finalised."),
    "recordings_incomplete_total": Counter(
        "voice_recordings_incomplete", "Recordings that lost audio (disk full or unwritable)."
    ),
    "recordings_failed_total": Counter(
        "voice_recordings_failed", "Recordings that could not be finalised."
    ),
}
_REFUSED = Counter("voice_calls_refused", "Calls refused, by SIP status.", ["code"])
_REFUSED_KEY = re.compile(r"calls_refused_(\d{3})")


class Counts(collections.Counter[str]):
    """A worker's counters (its health report's `counters`) whose increments are also counted
    for `/metrics`: there they outlive the worker (a killed worker's file stays), so the fleet's
    totals never go down. `c[key] += n` is `c[key] = c[key] + n`, so `__setitem__` sees n."""

    def __setitem__(self, key: str, value: int) -> None:
        step = value - self.get(key, 0)
        super().__setitem__(key, value)
        if step > 0:
            counted(key, step)


def counted(key: str, step: float = 1) -> None:
    if (counter := _COUNTED.get(key)) is not None:
        counter.inc(step)
    elif match := _REFUSED_KEY.fullmatch(key):
        _REFUSED.labels(match.group(1)).inc(step)


def answered(direction: str, since: float) -> None:
    """A call got its 200 OK; `since`: monotonic time its INVITE arrived or was sent."""
    ANSWER_SECONDS.labels(direction).observe(time.monotonic() - since)


class ReplyClock:
    """How long a caller waits for the IVR's reply once they have answered a prompt: from the
    key that answered it (not a digit timeout's end), or from the end of their speech, to the
    first frame of the next audio the call plays (voice/sip/player.py `on_start`). Loop side,
    except the callback `on_start` returns, which runs on the media thread."""

    def __init__(self) -> None:
        self._key_at = 0.0  # monotonic time of the latest key
        self._speech_end_at = 0.0  # monotonic time the latest recognised utterance ended
        self._due: tuple[Histogram, float] | None = None

    def key(self) -> None:
        self._key_at = time.monotonic()

    def heard(self, end: float, heard_until: float) -> None:
        """An utterance ended at call time `end`, and the caller's audio has reached call time
        `heard_until` by now: it ended that much ago (recognition lags behind the audio)."""
        self._speech_end_at = time.monotonic() - max(0.0, heard_until - end)

    def answered_by_key(self) -> None:
        self._due = (KEY_TO_AUDIO_SECONDS, self._key_at)

    def answered_by_speech(self) -> None:
        self._due = (SPEECH_TO_AUDIO_SECONDS, self._speech_end_at)

    def on_start(self) -> Callable[[], None] | None:
        """For the audio about to be played: times the reply it is, if it is one."""
        due, self._due = self._due, None
        if due is None:
            return None
        histogram, since = due

        def started() -> None:
            histogram.observe(time.monotonic() - since)

        return started
