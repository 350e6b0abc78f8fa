"""A call worker: one pjsua2 Endpoint (at most 4 calls) running the IVR for each call it answers.

Run by the supervisor (`voice serve`) as its own process, so a crash takes only its own calls.
Database work runs in threads (`asyncio.to_thread`); pjsua2 work runs on the engine's owner thread.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError, OperationalError

from accounts import attempts
from accounts.db import make_engine, make_sessions
from accounts.phones import E164
from accounts.promises import CallPromises
from accounts.retry import retry_db
from accounts.services import CallJournal, Ledger
from accounts.transcription import live_marker
from accounts.verification import CallVerifier, Lockout, Verifications
from accounts.views import AccountSummary, Balance, InvoiceSummary, PaymentSummary
from recordings.book import RecordingBook
from voice.asr.live import CallSpeech, Segment
from voice.asr.memory import limit_arenas
from voice.asr.model import load_model
from voice.config import Config
from voice.control import ControlServer
from voice.fleet import WorkerSpec
from voice.ivr.clips import ClipLibrary
from voice.ivr.inbound import InboundFlow
from voice.routing import outbound
from voice.routing.guardrails import Guardrails, Refusal
from voice.routing.line import BridgeRecording, CallLine
from voice.routing.transfer import Agent, AgentTransfer, agents_for, ring_outcome, route_of
from voice.sip.call import ANSWER_TIMEOUT, SipCall
from voice.sip.engine import CallIdentity, Events, SipEngine
from voice.sip.uri import reason_header

log = logging.getLogger(__name__)

EVENT_TRIES = 3  # a call event: ~0.75 s of retries, then it is skipped (the call goes on)
NOTE_TRIES = 8  # the closing note: ~20 s of retries (start-up repair closes what is left)
RING_TIMEOUT = 45.0  # seconds a call we place may ring before it counts as unanswered
# A softphone user (Kamailio's registrar) or a phone number (Kamailio's gateway); nothing else
# may reach a SIP URI we build.
DIALABLE = re.compile(r"\+?[0-9]{3,15}|[a-z0-9._-]{1,64}")
# A URI a leg may be placed to (a collector's configured sip_uri, or one built above).
LEG_URI = re.compile(r"sips?:[A-Za-z0-9+._~*#()-]{1,64}@[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?")


class AsyncLedger:
    """The IVR's `Ledger` over the SQLAlchemy service, off the event loop."""

    def __init__(self, ledger: Ledger, today: Callable[[], dt.date] = dt.date.today) -> None:
        self._ledger = ledger
        self._today = today

    async def accounts_for_phone(self, caller: str | None) -> list[AccountSummary]:
        return await asyncio.to_thread(self._ledger.accounts_for_phone, caller)

    async def account_by_number(self, number: str) -> AccountSummary | None:
        return await asyncio.to_thread(self._ledger.account_by_number, number)

    async def balance(self, account_id: int) -> Balance:
        return await asyncio.to_thread(self._ledger.balance, account_id, self._today())

    async def last_invoice(self, account_id: int) -> InvoiceSummary | None:
        return await asyncio.to_thread(self._ledger.last_invoice, account_id)

    async def last_payment(self, account_id: int) -> PaymentSummary | None:
        return await asyncio.to_thread(self._ledger.last_payment, account_id)


class CallLog:
    """The IVR's `Journal` for one call: call events and the closing note, in the database.

    Bookkeeping must never end a customer's call: a write that fails (SQLite's lock held past
    its busy timeout on a saturated machine, a database restart) is retried with back-off; an
    event that still fails is logged and skipped, while the note is retried longest.
    """

    def __init__(self, journal: CallJournal, call_id: int) -> None:
        self._journal = journal
        self.call_id = call_id

    async def event(self, kind: str, detail: dict[str, Any]) -> None:
        await self._write(f"event {kind}", EVENT_TRIES, self._journal.add_event, kind, detail)

    async def identified(self, account: AccountSummary, how: str) -> None:
        await self._write("account", EVENT_TRIES, self._journal.set_account, account.id)
        await self.event("identified", {"account": account.number, "how": how})

    async def finish(self, status: str, end_reason: str, summary: str) -> None:
        def finish_call(call_id: int) -> None:
            self._journal.finish_call(
                call_id, status=status, end_reason=end_reason, summary=summary
            )

        await self._write("note", NOTE_TRIES, finish_call)

    async def _write(self, what: str, tries: int, fn: Callable[..., Any], *args: Any) -> None:
        try:
            await retry_db(tries, fn, self.call_id, *args)
        except (OperationalError, DBAPIError) as exc:
            log.error("call %d: %s not written after %d tries: %s", self.call_id, what, tries, exc)


@dataclass
class ActiveRecording:
    recording_id: int
    wav: Path
    started: float  # monotonic
    ended: float | None = None


class Worker(Events):
    def __init__(self, cfg: Config, spec: WorkerSpec, model: Any = None) -> None:
        self.cfg = cfg
        self.spec = spec
        self.name = spec.name
        # The Vosk model, loaded once by the zygote and shared copy-on-write; None: keypad only.
        self.model = model if (cfg.asr.transcripts or cfg.asr.spoken_menu) else None
        self.phrases = cfg.asr.phrase_set() if model is not None else None
        self.speech: dict[int, CallSpeech] = {}  # engine key -> the call's live speech
        self._storing: dict[int, set[asyncio.Task[None]]] = {}  # call id -> utterance writes
        self.bridges: dict[int, BridgeRecording] = {}  # call id -> its bridged recording
        sessions = make_sessions(make_engine(cfg.database_url, cfg.database.busy_timeout_ms))
        self.sessions = sessions
        self.guardrails = Guardrails(cfg.guardrails, sessions)
        self._new_legs: dict[int, SipCall] = {}  # legs placed, until `place_leg` takes them
        self.ledger = AsyncLedger(Ledger(sessions, region=cfg.accounts.default_region))
        lockout = Lockout(
            cfg.ivr.verify_lockout_failures, dt.timedelta(minutes=cfg.ivr.verify_lockout_minutes)
        )
        self.verifications = Verifications(sessions, lockout)
        self.journal = CallJournal(sessions)
        self.clips = ClipLibrary(
            cfg.tts, cfg.data_dir / "cache" / "tts", cfg.prompts_dir, cfg.ivr.company_name
        )
        self.calls: dict[int, SipCall] = {}
        self.call_ids: dict[int, int] = {}  # engine key -> calls.id, once the call is journaled
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.engine: SipEngine | None = None
        self.metrics: collections.Counter[str] = collections.Counter()
        self._watchers: set[asyncio.Task[None]] = set()
        self.book = RecordingBook(sessions, cfg)
        self.recordings: dict[int, ActiveRecording] = {}  # engine key -> its recording
        self.control = ControlServer(
            spec.control_path,
            {
                "health": self.health,
                "hangup": self.hangup,
                "dial": self.dial,
                "pause_recording": self.pause_recording,
                "transcript": self.transcript,
                "click_to_call": self.click_to_call,
                "call_status": self.call_status,
            },
        )

    async def serve(self, stop: asyncio.Event) -> None:
        fresh = await asyncio.to_thread(self.clips.prewarm)
        log.info(
            "worker %s: %d prompt clips rendered, SIP on %s:%d",
            self.name,
            fresh,
            self.spec.sip.bind,
            self.spec.sip.port,
        )
        self.engine = SipEngine(
            self.spec.sip,
            asyncio.get_running_loop(),
            self,
            media_bind=self.spec.media_bind,
            proxy=self.spec.proxy,
        )
        self.engine.start()
        await self.control.start()
        try:
            await stop.wait()
            await self.drain(self.cfg.workers.drain_timeout)
        finally:
            await self.control.close()
            await asyncio.to_thread(self.engine.stop)
            await self._close_remaining_recordings()

    async def drain(self, timeout: float) -> None:
        """Stop taking calls, let calls in progress finish, then end what is left."""
        assert self.engine is not None
        self.engine.draining = True
        if not self.tasks:
            return
        log.info("worker %s: draining %d call(s), up to %g s", self.name, len(self.tasks), timeout)
        _, pending = await asyncio.wait(set(self.tasks.values()), timeout=timeout)
        # Cancelling a flow files its note as interrupted ("server shutting down").
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
        for call in list(self.calls.values()):
            await call.hangup()

    # -- control channel ----------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        assert self.engine is not None
        return {
            "name": self.name,
            "pid": os.getpid(),
            "calls": len(self.calls),
            "max_calls": self.spec.sip.max_calls,
            "draining": self.engine.draining,
            "counters": {**self.engine.counters, **self.metrics},
            "call_ids": sorted(self.call_ids.values()),
        }

    async def hangup(self, call_id: int) -> dict[str, Any]:
        key = self._key_of(call_id)
        if key is None or (call := self.calls.get(key)) is None:
            raise LookupError(f"no call {call_id} on {self.name}")
        await call.hangup()
        return {"call_id": call_id}

    def _key_of(self, call_id: int) -> int | None:
        """The engine key of the journaled call `call_id`, if this worker holds it."""
        return next((key for key, known in self.call_ids.items() if known == call_id), None)

    async def dial(self, to: str) -> dict[str, Any]:
        """Call a softphone user or a phone number through Kamailio and run the IVR for them."""
        assert self.engine is not None
        if self.spec.proxy is None:
            raise RuntimeError("placing calls needs Kamailio (workers.count != 1)")
        if not DIALABLE.fullmatch(to):
            raise ValueError("'to' must be a phone number or a softphone user name")
        identity = await self.engine.dial(f"sip:{to}@{self.cfg.kamailio.realm}")
        # `outgoing` ran before this resumes (the engine posts it before returning).
        for _ in range(100):
            if identity.key in self.call_ids:
                return {"call_id": self.call_ids[identity.key], "sip_call_id": identity.sip_call_id}
            if identity.key not in self.tasks:
                break
            await asyncio.sleep(0.01)
        return {"call_id": None, "sip_call_id": identity.sip_call_id}

    # -- Events (on the loop) -----------------------------------------------------------------

    def incoming(self, identity: CallIdentity) -> None:
        self._track(identity, ANSWER_TIMEOUT)

    def outgoing(self, identity: CallIdentity) -> None:
        self._track(identity, RING_TIMEOUT)

    def _track(self, identity: CallIdentity, answer_timeout: float) -> None:
        assert self.engine is not None
        call = SipCall(self.engine, identity, self.clips.render, answer_timeout)
        self.calls[identity.key] = call
        if identity.purpose == "leg":  # driven by whoever placed it (voice/routing/line.py)
            self._new_legs[identity.key] = call
            return
        run = self._run_softphone(call) if identity.softphone else self._run_call(call)
        task = asyncio.create_task(run, name=f"call-{identity.key}")
        self.tasks[identity.key] = task
        task.add_done_callback(lambda _t: self._forget(identity.key))

    def _forget(self, key: int) -> None:
        self.tasks.pop(key, None)
        self.call_ids.pop(key, None)

    def confirmed(self, key: int) -> None:
        if call := self.calls.get(key):
            call.on_confirmed()

    def digit(self, key: int, digit: str) -> None:
        if call := self.calls.get(key):
            call.on_digit(digit)

    def disconnected(self, key: int, code: int, reason: str) -> None:
        if call := self.calls.pop(key, None):
            call.on_disconnected(code, reason)
        if rec := self.recordings.get(key):
            rec.ended = time.monotonic()

    def recording_closed(self, key: int) -> None:
        if rec := self.recordings.pop(key, None):
            self._background(self._close_recording(rec))

    def refused(self, identity: CallIdentity, code: int, reason: str) -> None:
        log.warning(
            "refused call %s from %s: %d %s",
            identity.sip_call_id,
            identity.remote_uri,
            code,
            reason,
        )

    async def _run_call(self, call: SipCall) -> None:
        outbound = call.identity.outbound
        try:
            call_id = await retry_db(
                NOTE_TRIES,
                self.journal.start_call,
                direction="outbound" if outbound else "inbound",
                caller=call.callee if outbound else call.caller,
                callee=call.caller if outbound else call.callee,
                worker=self.name,
                sip_call_id=call.identity.sip_call_id,
            )
            self.call_ids[call.identity.key] = call_id
            if not outbound:
                await retry_db(EVENT_TRIES, self.journal.answered, call_id)
            else:
                self._background(self._note_answer(call, call_id))
            await self._start_recording(call, call_id)
            await self._start_speech(call, call_id)
            journal = CallLog(self.journal, call_id)
            flow = InboundFlow(
                call,
                self.ledger,
                journal,
                self.cfg.ivr,
                agent=self._transfer(call, call_id, journal),
                direction="outbound" if outbound else "inbound",
                verifier=self._verifier(call.callee if outbound else call.caller, call_id),
                promises=CallPromises(self.sessions, call_id),
            )
            await flow.run()
            await self._annotate(call_id)
        except Exception:
            log.exception("call %s failed", call.identity.sip_call_id)
            await call.hangup()
        finally:
            if speech := self.speech.pop(call.identity.key, None):
                await self._finish_speech(speech, self.call_ids.get(call.identity.key))

    def _verifier(self, customer: str | None, call_id: int) -> CallVerifier | None:
        ivr = self.cfg.ivr
        if ivr.verify == "none":
            return None
        return CallVerifier(
            self.verifications, ivr.verify, customer, call_id, self.cfg.accounts.default_region
        )

    # -- agents: transfer, legs, click-to-call, softphone calls ----------------------------------

    def _transfer(self, call: SipCall, call_id: int, journal: CallLog) -> AgentTransfer:
        agents = self.cfg.agents

        async def directory(account: AccountSummary) -> list[Agent]:
            def find() -> list[Agent]:
                with self.sessions() as session:
                    return agents_for(
                        session,
                        account.collector_id,
                        realm=self.cfg.kamailio.realm,
                        proxy=self.spec.proxy is not None,
                        try_team=agents.try_team,
                        team_size=agents.team_size,
                    )

            return await retry_db(EVENT_TRIES, find)

        line = CallLine(self, call_id, journal, waiting=call)
        return AgentTransfer(agents, line, directory, journal, time.monotonic)

    async def place_leg(
        self,
        uri: str,
        *,
        from_uri: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> SipCall:
        """Place a call that runs no IVR (a collector, a click-to-call customer)."""
        assert self.engine is not None
        if not LEG_URI.fullmatch(uri):
            raise ValueError(f"not a SIP URI a call may be placed to: {uri!r}")
        identity = await self.engine.dial(uri, from_uri=from_uri, headers=headers, purpose="leg")
        # `outgoing` ran before this resumes (the engine posts it before returning).
        return self._new_legs.pop(identity.key)

    async def mark_answered(self, call_id: int) -> None:
        await retry_db(EVENT_TRIES, self.journal.answered, call_id)

    async def click_to_call(
        self,
        collector: int | str,
        customer: str,
        account_id: int,
        user: str,
        caller_id: str = "",
        attempt: int | None = None,
    ) -> dict[str, Any]:
        """Ring the collector, then dial `customer` and bridge them (voice/routing/outbound.py).

        Returns once the collector's phone is ringing: {"call_id", "worker", "sip_call_id"}.
        The lead's API checks the guardrails before asking; the worker checks the inputs.
        """
        assert self.engine is not None
        if self.spec.proxy is None:
            raise RuntimeError("click-to-call needs Kamailio (workers.count != 1)")
        if not E164.fullmatch(str(customer)):
            raise ValueError("'customer' must be an E.164 number like +12125550101")
        caller_id = caller_id or self.cfg.guardrails.caller_id
        if caller_id and not E164.fullmatch(caller_id):
            raise ValueError("'caller_id' must be an E.164 number or empty")
        if not isinstance(user, str) or not 1 <= len(user) <= 100:
            raise ValueError("'user' must name who asked (1-100 characters)")
        agent = await asyncio.to_thread(self._agent_of, collector)
        if agent is None:
            raise LookupError(f"collector {collector!r} has no softphone or sip_uri to ring")
        leg = await self.place_leg(agent.uri, from_uri=None)
        call_id = await retry_db(
            NOTE_TRIES,
            self.journal.start_call,
            direction="outbound",
            caller=caller_id or None,
            callee=customer,
            worker=self.name,
            sip_call_id=leg.identity.sip_call_id,
        )
        journal = CallLog(self.journal, call_id)
        if attempt is None:
            await retry_db(EVENT_TRIES, self.journal.set_account, call_id, int(account_id))
        else:  # the API's reservation is this call (accounts/attempts.py): counted once
            await retry_db(EVENT_TRIES, attempts.attach, self.sessions, int(attempt), call_id)
        self.call_ids[leg.key] = call_id
        await journal.event(
            "click_to_call",
            {
                "collector_id": agent.collector_id,
                "collector": agent.name,
                "via": agent.via,
                "user": user,
                "to": customer,
                "caller_id": caller_id or None,
            },
        )
        run = self._click_to_call(leg, agent, call_id, journal, customer, caller_id, user)
        task = asyncio.create_task(run, name=f"c2c-{call_id}")
        self.tasks[leg.key] = task
        task.add_done_callback(lambda _t: self._forget(leg.key))
        return {"call_id": call_id, "worker": self.name, "sip_call_id": leg.identity.sip_call_id}

    def _agent_of(self, collector: int | str) -> Agent | None:
        from sqlalchemy import select

        from accounts.models import Collector, Softphone

        with self.sessions() as session:
            if isinstance(collector, int) or str(collector).isdigit():
                found = session.get(Collector, int(collector))
            else:
                found = session.scalar(select(Collector).where(Collector.name == collector))
            if found is None or not found.active:
                return None
            phones = list(
                session.scalars(
                    select(Softphone.username).where(Softphone.collector_id == found.id)
                )
            )
            return route_of(
                found, phones, realm=self.cfg.kamailio.realm, proxy=self.spec.proxy is not None
            )

    async def _click_to_call(
        self,
        leg: SipCall,
        agent: Agent,
        call_id: int,
        journal: CallLog,
        customer: str,
        caller_id: str,
        user: str,
    ) -> None:
        status, reason, summary = "completed", "", ""
        head = f"Click-to-call to {customer} by {agent.name} ({agent.via}) for {user}" + (
            f", presenting {caller_id}." if caller_id else "."
        )
        try:
            await journal.event("collector_ringing", {"name": agent.name, "via": agent.via})
            line = CallLine(self, call_id, journal)
            try:
                answered = await asyncio.wait_for(leg.wait_answered(), self.cfg.agents.ring_timeout)
            except TimeoutError:
                answered = False
            if not answered or leg.ended:
                timed_out = not leg.ended
                await leg.hangup()
                outcome = ring_outcome(False, timed_out, leg.end_code)
                await journal.event("collector_" + outcome, {"code": leg.end_code})
                reason = f"collector {outcome.replace('_', ' ')}"
                summary = f"The collector's phone: {outcome.replace('_', ' ')}."
                return
            await journal.event("collector_answered", {"name": agent.name})
            line.waiting = leg
            reason, summary = await outbound.connect_customer(
                line, leg, e164=customer, caller_id=caller_id, collector=agent.name, user=user
            )
        except asyncio.CancelledError:
            status, reason = "interrupted", "server shutting down"
            raise
        except Exception as exc:
            log.exception("click-to-call %d failed", call_id)
            status, reason = "failed", f"error: {type(exc).__name__}"
            await leg.hangup()
        finally:
            await self._finish(call_id, status, reason, f"{head}\n{summary}".strip(), agent.name)

    async def _finish(
        self, call_id: int, status: str, reason: str, summary: str, author: str
    ) -> None:
        def finish() -> None:
            self.journal.finish_call(
                call_id,
                status=status,
                end_reason=reason[:100],
                summary=f"{summary}\nEnded: {reason}.",
                author=author[:100],
            )

        try:
            await retry_db(NOTE_TRIES, finish)
        except (OperationalError, DBAPIError) as exc:
            log.error("call %d: note not written: %s", call_id, exc)
        await self._annotate(call_id)
        await self._transcript_done(call_id)  # the bridge's recognisers closed with it

    async def _annotate(self, call_id: int) -> None:
        try:
            await retry_db(EVENT_TRIES, self.book.annotate, call_id)
        except (OperationalError, DBAPIError) as exc:
            log.error("call %d: recording lines not added to the note: %s", call_id, exc)

    async def call_status(self, call_id: int) -> dict[str, Any]:
        """A collector-placed call's progress, from its events (any worker's, in the DB)."""
        events = await asyncio.to_thread(self.journal.events, int(call_id))
        return {
            "call_id": int(call_id),
            "status": outbound.status_of(events),
            "events": [{"kind": k, **d} for k, d in events],
        }

    async def _run_softphone(self, phone: SipCall) -> None:
        """A collector's softphone dialled a number: check it, refuse (403) or connect it."""
        assert self.engine is not None
        ident = phone.identity
        assert ident.softphone is not None

        def check() -> outbound.SoftphoneCall | Refusal:
            with self.sessions.begin() as session:  # commits the attempt it reserves
                return outbound.check_softphone_call(
                    self.cfg, session, self.guardrails, ident.softphone or "", ident.dialled
                )

        try:
            decision = await retry_db(EVENT_TRIES, check)
        except Exception:
            log.exception("softphone call from %s could not be checked", ident.softphone)
            await self.engine.answer(ident.key, 500, "Server Internal Error")
            return
        if isinstance(decision, Refusal):
            log.warning(
                "softphone %s: call to %r refused (%s): %s",
                ident.softphone,
                ident.dialled,
                decision.rule,
                decision.reason,
            )
            self.metrics["softphone_calls_refused_total"] += 1
            await self.engine.answer(
                ident.key, 403, "Forbidden", (("Reason", reason_header(403, decision.reason)),)
            )
            await asyncio.to_thread(
                outbound.audit_softphone_refusal,
                self.sessions,
                ident.softphone,
                None,
                ident.dialled,
                decision,
            )
            return
        await self._softphone_call(phone, decision)

    async def _softphone_call(self, phone: SipCall, call: outbound.SoftphoneCall) -> None:
        assert self.engine is not None
        caller_id = self.cfg.guardrails.caller_id
        call_id = await retry_db(
            NOTE_TRIES,
            self.journal.start_call,
            direction="outbound",
            caller=caller_id or None,
            callee=call.e164,
            worker=self.name,
            sip_call_id=phone.identity.sip_call_id,
        )
        self.call_ids[phone.key] = call_id
        journal = CallLog(self.journal, call_id)
        status, reason, summary = "completed", "", ""
        head = f"Outbound call to {call.e164} by {call.collector} (softphone {call.softphone})" + (
            f", presenting {caller_id}." if caller_id else "."
        )
        try:
            await retry_db(EVENT_TRIES, attempts.attach, self.sessions, call.attempt, call_id)
            await journal.event(
                "softphone_call",
                {
                    "softphone": call.softphone,
                    "collector_id": call.collector_id,
                    "collector": call.collector,
                    "to": call.e164,
                    "account": call.account,
                    "caller_id": caller_id or None,
                },
            )
            await self.engine.answer(phone.key, 200)
            if not await phone.wait_answered():
                reason = "collector hung up before the customer was dialled"
                return
            line = CallLine(self, call_id, journal, waiting=phone)
            reason, summary = await outbound.connect_customer(
                line,
                phone,
                e164=call.e164,
                caller_id=caller_id,
                collector=call.collector,
                user=f"softphone:{call.softphone}",
            )
        except asyncio.CancelledError:
            status, reason = "interrupted", "server shutting down"
            raise
        except Exception as exc:
            log.exception("softphone call %d failed", call_id)
            status, reason = "failed", f"error: {type(exc).__name__}"
            await phone.hangup()
        finally:
            await self._finish(
                call_id, status, reason, f"{head}\n{summary}".strip(), call.collector
            )

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    # -- recordings ---------------------------------------------------------------------------

    async def _start_recording(self, call: SipCall, call_id: int) -> None:
        assert self.engine is not None
        try:
            recording_id, wav = await asyncio.to_thread(self.book.open, call_id)
        except Exception:
            # No recording must not mean no call: the note will say it was not recorded.
            log.exception("call %d: recording could not be opened", call_id)
            return
        rec = ActiveRecording(recording_id, wav, time.monotonic())
        self.recordings[call.identity.key] = rec
        if not await self.engine.start_recording(call.identity.key, str(wav)):
            self.recordings.pop(call.identity.key, None)  # the call ended first
            await asyncio.to_thread(self.book.close, recording_id)

    # -- live speech --------------------------------------------------------------------------

    async def _start_speech(self, call: SipCall, call_id: int) -> None:
        """The caller into the recogniser and what the IVR plays as text, both timed against
        the call's recording."""
        assert self.engine is not None
        if self.model is None:
            return
        key = call.identity.key
        rec = self.recordings.get(key)
        started = rec.started if rec is not None else time.monotonic()
        recording_id = rec.recording_id if rec is not None else None
        transcribe = self.cfg.asr.live
        speech = CallSpeech(
            self.model,
            asyncio.get_running_loop(),
            speakers=("caller",),  # the IVR's side is the text it rendered: speech.said()
            transcribe=transcribe,
            origin=time.monotonic() - started,
            on_segment=lambda seg: self._store_soon(call_id, recording_id, seg),
            on_closed=live_marker(self.sessions, recording_id, self.cfg.asr),  # after-call job?
        )
        self.speech[key] = speech
        call.attach_speech(speech, self.phrases)
        said = speech.said() if self.cfg.asr.transcripts else None
        if not await self.engine.listen(key, speech.sink("caller"), said):
            self.speech.pop(key, None)
            await speech.close()

    async def _finish_speech(self, speech: CallSpeech, call_id: int | None) -> None:
        """The last utterances out and stored, then the CRM is owed the whole transcript."""
        await speech.close()
        if call_id is not None:
            await self._transcript_done(call_id)

    async def _transcript_done(self, call_id: int) -> None:
        """Once every stored utterance is in, owe the CRM the transcript (if there is one)."""
        pending = self._storing.pop(call_id, set())
        if pending:
            await asyncio.wait(pending, timeout=60)
        try:
            await retry_db(NOTE_TRIES, self.journal.transcript_ready, call_id)
        except (OperationalError, DBAPIError) as exc:
            log.error("call %d: transcript delivery not queued: %s", call_id, exc)

    def _store_soon(self, call_id: int, recording_id: int | None, seg: Segment) -> None:
        task = asyncio.create_task(self._store(call_id, recording_id, seg))
        self._storing.setdefault(call_id, set()).add(task)
        task.add_done_callback(self._storing.get(call_id, set()).discard)

    async def _store(self, call_id: int, recording_id: int | None, seg: Segment) -> None:
        try:
            await retry_db(
                NOTE_TRIES,
                self.journal.add_transcript,
                call_id,
                speaker=seg.speaker,
                text=seg.text,
                start=seg.start,
                end=seg.end,
                confidence=round(seg.confidence, 3),
                words=list(seg.words),
                recording_id=recording_id,
                source=seg.source,
            )
        except (OperationalError, DBAPIError) as exc:
            log.error("call %d: transcript segment not written: %s", call_id, exc)
        self.metrics["transcript_segments_total"] += 1

    async def transcript(self, call_id: int) -> dict[str, Any]:
        """The call's transcript so far, words in progress included (the live view)."""
        key = self._key_of(call_id)
        speech = self.speech.get(key) if key is not None else None
        if speech is None:
            raise LookupError(f"no live transcript for call {call_id} on {self.name}")
        return {"call_id": call_id, **speech.snapshot()}

    async def _close_recording(self, rec: ActiveRecording, interrupted: bool = False) -> None:
        seconds = (rec.ended or time.monotonic()) - rec.started
        try:
            closed = await asyncio.to_thread(
                self.book.close, rec.recording_id, interrupted=interrupted, call_seconds=seconds
            )
        except Exception:
            log.exception("recording %d could not be finalised", rec.recording_id)
            self.metrics["recordings_failed_total"] += 1
            return
        self.metrics["recordings_total"] += 1
        if closed.loss:
            self.metrics["recordings_incomplete_total"] += 1
            log.error("recording %d incomplete: %s", rec.recording_id, closed.loss)

    async def _close_remaining_recordings(self) -> None:
        """After the engine stopped, every WAV is closed: finalise what no event reported."""
        if self._watchers:
            await asyncio.wait(set(self._watchers), timeout=30)
        for key in list(self.recordings):
            await self._close_recording(self.recordings.pop(key))

    async def pause_recording(self, call_id: int, paused: bool) -> dict[str, Any]:
        """PCI: silence into the call's recordings and recognisers while card details are
        given, and mark the gap on each recording."""
        assert self.engine is not None
        paused = bool(paused)
        key = self._key_of(call_id)
        gaps: list[tuple[int, float]] = []  # (recording, seconds into it)
        rec = self.recordings.get(key) if key is not None else None
        if rec is not None and await self.engine.pause_recording(key, paused):
            gaps.append((rec.recording_id, time.monotonic() - rec.started))
        if key is not None and (speech := self.speech.get(key)) is not None:
            speech.paused = paused
        bridge = self.bridges.get(call_id)
        if bridge is not None:
            if bridge.speech is not None:
                bridge.speech.paused = paused
            if bridge.writer is not None and bridge.recording_id is not None:
                bridge.writer.paused = paused
                gaps.append((bridge.recording_id, time.monotonic() - bridge.started))
        if not gaps:
            raise LookupError(f"no recording in progress for call {call_id} on {self.name}")
        for recording_id, at in gaps:
            await asyncio.to_thread(self.book.mark_pause, recording_id, round(at, 2), paused)
        return {"call_id": call_id, "paused": paused, "at_s": round(gaps[0][1], 2)}

    async def _note_answer(self, call: SipCall, call_id: int) -> None:
        if await call.wait_answered():
            await asyncio.to_thread(self.journal.answered, call_id)


def run(cfg: Config, spec: WorkerSpec, model: Any = None, *, load: bool = False) -> None:
    """Serve until SIGTERM. `model`: the zygote's preloaded Vosk model; `load`: load it here."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if load and model is None:
        model = load_model(cfg.asr.model)
    if model is not None:
        limit_arenas()  # recogniser threads come and go with calls: see voice/asr/memory.py

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Worker(cfg, spec, model).serve(stop)

    asyncio.run(main())
