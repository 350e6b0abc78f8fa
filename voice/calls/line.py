"""The SIP side of reaching a person, in the call worker: ring, bridge, record, voicemail.

`CallLine` implements `AgentLine` (voice/ivr/transfer.py) for one customer call, and the
pieces click-to-call and softphone calls share (voice/calls/collector.py). It is built from
what it needs (a way to place a leg, the call's `CallLog` and `CallMedia`), not from a worker:

- `ring`: place a leg (`purpose="leg"`: no IVR runs on it), wait for an answer up to a
  timeout, CANCEL on timeout, and say how it ended (answered, busy, no_answer, failed);
- `bridge`: join customer and collector in the conference bridge until either hangs up, with
  a two-channel recording (customer left, collector right) written from the two calls' taps,
  the collector's words transcribed as "agent" (and the customer's as "caller" when the call
  has no IVR transcript already), and outcome codes keyed on the collector's phone stored;
- `voicemail`: the greeting, a beep, the message from the customer's tap into a mono WAV, a
  `voicemail` recording and a `voicemail` note on the account.

DTMF never crosses the bridge: pjsua2 reports RFC 2833 and SIP INFO digits to the call that
received them and the conference bridge carries audio only, so a collector's outcome code is
never heard or received by the customer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from accounts.outcomes import OutcomeError, parse_dtmf_outcome
from accounts.reach import Agent
from accounts.views import AccountSummary
from recordings.book import recording_line
from recordings.capture import WavWriter
from voice.calls.call import SipCall, first_of
from voice.calls.journal import CallLog
from voice.calls.media import BridgeRecording, CallMedia
from voice.ivr import tones
from voice.ivr.call import HangUp
from voice.ivr.transfer import Connected, Ring, Voicemail, ring_outcome
from voice.ivr.voicemail import record_message
from voice.sip.engine import CallRefused

log = logging.getLogger(__name__)

HOLD_SECONDS = 600.0  # ringback buffer length: longer than any ring sequence
TRANSCRIPT_SETTLE = 1.5  # seconds to wait for the last utterance of a voicemail to be final
MAX_CODE = 24  # keys of one outcome code before the collector's buffer is dropped


@dataclass
class Bridged:
    seconds: float
    ended_by: str  # "customer" or "collector"
    recording_id: int | None


# Place a call that runs no IVR: (uri, from_uri=, headers=) -> the leg (voice/calls/worker.py).
PlaceLeg = Callable[..., Awaitable[SipCall]]


class CallLine:
    def __init__(
        self,
        place: PlaceLeg,
        log: CallLog,
        media: CallMedia,
        *,
        voicemail_max_seconds: float,
        waiting: SipCall | None = None,
    ) -> None:
        self.place = place
        self.journal = log
        self.media = media
        self.call_id = log.call_id
        self.voicemail_max_seconds = voicemail_max_seconds
        # The party on hold while a leg rings: if they hang up, ringing stops (HangUp).
        self.waiting = waiting

    @property
    def engine(self) -> Any:
        return self.media.engine

    # -- AgentLine ------------------------------------------------------------------------------

    async def hold(self, call: SipCall) -> None:
        with contextlib.suppress(HangUp):
            await call.play_audio(tones.ringback(HOLD_SECONDS), wait=False)

    async def unhold(self, call: SipCall) -> None:
        call.stop_audio()

    async def ring(self, agent: Agent, timeout: float) -> Ring:
        return await self.ring_uri(agent.uri, timeout)

    async def connect(
        self, call: SipCall, agent: Agent, leg: SipCall, account: AccountSummary
    ) -> Connected:
        done = await self.bridge(call, leg, collector=agent.name, caller_speech=False)
        return Connected(agent, done.seconds, done.ended_by)

    async def voicemail(
        self, call: SipCall, account: AccountSummary, why: str, collector: str | None
    ) -> Voicemail | None:
        capture = TapCapture(self, call)
        message = await record_message(
            call,
            capture,
            self.voicemail_max_seconds,
            tones.beep(),
            time.monotonic,
        )
        if not message.started or capture.recording_id is None:
            await capture.discard()
            return None
        rec = await self.media.close_recording(capture.recording_id, message.seconds)
        transcript = await capture.transcript()
        lines = [
            f"Voicemail for {collector or 'the collections team'} from "
            f"{call.caller or 'a withheld number'} on account {account.number}: "
            f"{message.seconds:.1f} s, ended by {message.ended_by}.",
            f"Nobody took the call: {why}.",
            recording_line(rec),
        ]
        if transcript:
            lines.append(f"Transcript: {transcript}")
        note_id = await self.journal.add_note(
            account.id, "voicemail", "voicemail", "\n".join(lines)
        )
        await self.journal.event(
            "voicemail",
            {
                "recording_id": rec.id,
                "note_id": note_id,
                "seconds": round(message.seconds, 1),
                "ended_by": message.ended_by,
                "collector_id": account.collector_id,
            },
        )
        return Voicemail(message.seconds, message.ended_by, rec.id, note_id)

    # -- shared pieces --------------------------------------------------------------------------

    async def ring_uri(
        self,
        uri: str,
        timeout: float,
        *,
        from_uri: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Ring:
        """Place a leg to `uri` and wait up to `timeout` s for its answer (CANCEL after)."""
        try:
            leg = await self.place(uri, from_uri=from_uri, headers=headers)
        except (CallRefused, ValueError) as exc:
            log.warning("call %d: could not ring %s: %s", self.call_id, uri, exc)
            return Ring("failed", getattr(exc, "code", None))
        waiters = [leg.wait_answered()]
        if self.waiting is not None:
            waiters.append(self.waiting.wait_ended())
        timed_out = False
        try:
            await asyncio.wait_for(first_of(*waiters), timeout)
        except TimeoutError:
            timed_out = True
        answered = leg.answered and not leg.ended
        if self.waiting is not None and self.waiting.ended:
            await leg.hangup()
            raise HangUp()
        if not answered:
            await leg.hangup()
        return Ring(
            ring_outcome(answered, timed_out, leg.end_code), leg.end_code, leg if answered else None
        )

    async def bridge(
        self,
        customer: SipCall,
        agent: SipCall,
        *,
        collector: str,
        caller_speech: bool = True,
        user: str | None = None,
    ) -> Bridged:
        """Customer and collector hear each other until either hangs up; then both are ended.

        `caller_speech`: also transcribe the customer here (a call without an IVR transcript).
        `user`: who outcome codes keyed on the collector's phone are stored as.
        """
        engine = self.engine
        if not await engine.bridge(customer.key, agent.key):
            return Bridged(0.0, "customer" if customer.ended else "collector", None)
        started = time.monotonic()
        sinks: list[tuple[int, Any]] = []
        recording_id, writer = await self.media.open_stereo()
        if writer is not None:
            sinks += [(customer.key, writer.sink(0)), (agent.key, writer.sink(1))]
        speech = self.media.bridge_speech(recording_id, caller_speech)
        if speech is not None:
            sinks.append((agent.key, speech.sink("agent")))
            if caller_speech:
                sinks.append((customer.key, speech.sink("caller")))
        for key, sink in sinks:
            await engine.add_sink(key, sink)
        # PCI pause reaches this recording and these recognisers through the call's media.
        self.media.bridge = BridgeRecording(recording_id, writer, speech, started)
        outcomes = asyncio.create_task(self._outcomes(agent, user or collector))
        try:
            await first_of(customer.wait_ended(), agent.wait_ended())
        finally:
            self.media.bridge = None
            seconds = time.monotonic() - started
            ended_by = "customer" if customer.ended else "collector"
            outcomes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await outcomes
            for key, sink in sinks:
                with contextlib.suppress(RuntimeError):  # the engine is stopping
                    await engine.remove_sink(key, sink)
            await customer.hangup()
            await agent.hangup()
            if speech is not None:
                await speech.close()
            if writer is not None and recording_id is not None:
                await self.media.close_stereo(recording_id, writer, seconds)
        return Bridged(seconds, ended_by, recording_id)

    async def _outcomes(self, agent: SipCall, user: str) -> None:
        """Outcome codes keyed on the collector's phone (`*1#`, ...: accounts/outcomes.py)."""
        code = ""
        while True:
            try:
                key = await agent.next_key(3600.0)
            except HangUp:
                return
            if key is None or (not code and key != "*"):
                continue
            code += key
            if len(code) > MAX_CODE:
                code = ""
            elif key == "#":
                await self._store_outcome(agent, code, user)
                code = ""

    async def _store_outcome(self, agent: SipCall, code: str, user: str) -> None:
        try:
            marking = parse_dtmf_outcome(code)
            outcome_id = await self.journal.mark_outcome(marking, user[:100])
        except (OutcomeError, LookupError) as exc:
            await self.journal.event("outcome_refused", {"code": code, "error": str(exc)})
            sound = tones.error()
        else:
            await self.journal.event(
                "outcome", {"code": code, "kind": marking.kind, "outcome_id": outcome_id}
            )
            sound = tones.confirm()
        with contextlib.suppress(HangUp):
            await agent.play_audio(sound, wait=False)  # the collector's player: they alone hear it


class TapCapture:
    """A voicemail's `Capture`: the customer's tap into a mono WAV (a `voicemail` recording)."""

    def __init__(self, line: CallLine, call: SipCall) -> None:
        self.line = line
        self.call = call
        self.recording_id: int | None = None
        self.writer: WavWriter | None = None
        self._sink: Any = None
        self._segments_before: int | None = None

    async def start(self) -> None:
        media = self.line.media
        self.recording_id, self.writer = await media.open_voicemail(self.line.voicemail_max_seconds)
        self._sink = self.writer.sink(0)
        heard = media.caller_segments()
        self._segments_before = len(heard) if heard is not None else None
        await self.line.engine.add_sink(self.call.key, self._sink)

    async def stop(self) -> float:
        if self.writer is None:
            return 0.0
        with contextlib.suppress(RuntimeError):
            await self.line.engine.remove_sink(self.call.key, self._sink)
        return await asyncio.to_thread(self.writer.close)

    async def discard(self) -> None:
        if self.writer is not None and self.recording_id is not None:
            await self.line.media.close_recording(self.recording_id)

    async def transcript(self) -> str:
        """What the caller said in the message, when the call has a live transcript."""
        if self.line.media.caller_segments() is None or self._segments_before is None:
            return ""
        await asyncio.sleep(TRANSCRIPT_SETTLE)  # the last utterance's final comes after silence
        heard = self.line.media.caller_segments() or []
        said = [s for s in heard[self._segments_before :] if s.speaker == "caller"]
        return " ".join(s.text for s in said)
