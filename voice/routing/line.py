"""The SIP side of reaching a person, in the call worker: ring, bridge, record, voicemail.

`CallLine` implements `AgentLine` (voice/routing/transfer.py) for one customer call, and the
pieces click-to-call and softphone calls share (voice/routing/outbound.py):

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from accounts.models import Note, utcnow
from accounts.outcomes import OutcomeError, mark_outcome, parse_dtmf_outcome
from accounts.transcription import live_marker
from accounts.views import AccountSummary
from recordings.book import recording_line
from recordings.capture import WavWriter
from voice.asr.live import CallSpeech
from voice.ivr import tones
from voice.ivr.call import HangUp
from voice.routing.transfer import Agent, Connected, Ring, Voicemail, ring_outcome
from voice.routing.voicemail import record_message
from voice.sip.call import SipCall
from voice.sip.engine import CallRefused
from voice.sip.player import FRAME_BYTES

if TYPE_CHECKING:
    from voice.worker import CallLog, Worker

log = logging.getLogger(__name__)

HOLD_SECONDS = 600.0  # ringback buffer length: longer than any ring sequence
TRANSCRIPT_SETTLE = 1.5  # seconds to wait for the last utterance of a voicemail to be final
MAX_CODE = 24  # keys of one outcome code before the collector's buffer is dropped


@dataclass
class BridgeRecording:
    """What a PCI pause must silence while a customer and a collector are bridged."""

    recording_id: int | None
    writer: WavWriter | None
    speech: CallSpeech | None
    started: float  # monotonic


@dataclass
class Bridged:
    seconds: float
    ended_by: str  # "customer" or "collector"
    recording_id: int | None


class CallLine:
    def __init__(
        self, worker: Worker, call_id: int, journal: CallLog, waiting: SipCall | None = None
    ) -> None:
        self.worker = worker
        self.call_id = call_id
        self.journal = journal
        # The party on hold while a leg rings: if they hang up, ringing stops (HangUp).
        self.waiting = waiting

    @property
    def engine(self) -> Any:
        assert self.worker.engine is not None
        return self.worker.engine

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
            self.worker.cfg.agents.voicemail_max_seconds,
            tones.beep(),
            time.monotonic,
        )
        if not message.started or capture.recording_id is None:
            await capture.discard()
            return None
        rec = await asyncio.to_thread(
            self.worker.book.close, capture.recording_id, call_seconds=message.seconds
        )
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
        note_id = await asyncio.to_thread(
            self._add_note, account.id, "voicemail", "voicemail", "\n".join(lines)
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
            leg = await self.worker.place_leg(uri, from_uri=from_uri, headers=headers)
        except (CallRefused, ValueError) as exc:
            log.warning("call %d: could not ring %s: %s", self.call_id, uri, exc)
            return Ring("failed", getattr(exc, "code", None))
        waiters = [leg.wait_answered()]
        if self.waiting is not None:
            waiters.append(self.waiting.wait_ended())
        timed_out = False
        try:
            await asyncio.wait_for(SipCall._first(*waiters), timeout)
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
        recording_id, writer = await self._open_stereo()
        if writer is not None:
            sinks += [(customer.key, writer.sink(0)), (agent.key, writer.sink(1))]
        speech = self._speech(recording_id, caller_speech)
        if speech is not None:
            sinks.append((agent.key, speech.sink("agent")))
            if caller_speech:
                sinks.append((customer.key, speech.sink("caller")))
        for key, sink in sinks:
            await engine.add_sink(key, sink)
        # PCI pause reaches this recording and these recognisers through the worker.
        self.worker.bridges[self.call_id] = BridgeRecording(recording_id, writer, speech, started)
        outcomes = asyncio.create_task(self._outcomes(agent, user or collector))
        try:
            await SipCall._first(customer.wait_ended(), agent.wait_ended())
        finally:
            self.worker.bridges.pop(self.call_id, None)
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
                await self._close_stereo(recording_id, writer, seconds)
        return Bridged(seconds, ended_by, recording_id)

    async def _open_stereo(self) -> tuple[int | None, WavWriter | None]:
        try:
            recording_id, wav = await asyncio.to_thread(
                self.worker.book.open, self.call_id, kind="call", channels=2
            )
            return recording_id, WavWriter(wav, 2, frame_bytes=FRAME_BYTES)
        except Exception:
            # No recording must not mean no call: the note says what was recorded.
            log.exception("call %d: bridged recording could not be opened", self.call_id)
            return None, None

    async def _close_stereo(self, recording_id: int, writer: WavWriter, seconds: float) -> None:
        try:
            await asyncio.to_thread(writer.close)
            await asyncio.to_thread(self.worker.book.close, recording_id, call_seconds=seconds)
            self.worker.metrics["recordings_total"] += 1
        except Exception:
            log.exception("recording %d could not be finalised", recording_id)
            self.worker.metrics["recordings_failed_total"] += 1

    def _speech(self, recording_id: int | None, caller: bool) -> CallSpeech | None:
        worker = self.worker
        if worker.model is None or not worker.cfg.asr.live:
            return None
        call_id = self.call_id
        return CallSpeech(
            worker.model,
            asyncio.get_running_loop(),
            speakers=("caller", "agent") if caller else ("agent",),
            transcribe=True,
            on_segment=lambda seg: worker._store_soon(call_id, recording_id, seg),
            on_closed=live_marker(worker.sessions, recording_id, worker.cfg.asr),
        )

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
            outcome_id = await asyncio.to_thread(self._mark, marking, user[:100])
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

    def _mark(self, marking: Any, user: str) -> int:
        sessions: sessionmaker[Session] = self.worker.sessions
        with sessions.begin() as session:
            return mark_outcome(session, self.call_id, marking, user=user).id

    def _add_note(self, account_id: int, kind: str, author: str, body: str) -> int:
        sessions: sessionmaker[Session] = self.worker.sessions
        with sessions.begin() as session:
            note = Note(
                account_id=account_id,
                call_id=self.call_id,
                created_at=utcnow(),
                author=author,
                kind=kind,
                body=body,
            )
            session.add(note)
            session.flush()
            return note.id


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
        worker = self.line.worker
        self.recording_id, wav = await asyncio.to_thread(
            worker.book.open, self.line.call_id, kind="voicemail", channels=1
        )
        limit = worker.cfg.agents.voicemail_max_seconds
        self.writer = WavWriter(wav, 1, frame_bytes=FRAME_BYTES, max_seconds=limit)
        self._sink = self.writer.sink(0)
        speech = worker.speech.get(self.call.key)
        self._segments_before = len(speech.segments) if speech is not None else None
        await self.line.engine.add_sink(self.call.key, self._sink)

    async def stop(self) -> float:
        if self.writer is None:
            return 0.0
        with contextlib.suppress(RuntimeError):
            await self.line.engine.remove_sink(self.call.key, self._sink)
        return await asyncio.to_thread(self.writer.close)

    async def discard(self) -> None:
        if self.writer is not None and self.recording_id is not None:
            await asyncio.to_thread(self.line.worker.book.close, self.recording_id)

    async def transcript(self) -> str:
        """What the caller said in the message, when the call has a live transcript."""
        speech = self.line.worker.speech.get(self.call.key)
        if speech is None or self._segments_before is None:
            return ""
        await asyncio.sleep(TRANSCRIPT_SETTLE)  # the last utterance's final comes after silence
        said = [s for s in speech.segments[self._segments_before :] if s.speaker == "caller"]
        return " ".join(s.text for s in said)
