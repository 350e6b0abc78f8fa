"""Calls' set-up and end on the owner thread: incoming INVITEs, answers, dialling, admission.

- Calls above `max_calls` get 486 and bursts above `max_setups_per_second` get 503 before
  pjlib's ioqueue runs out of its socket slots (each call holds 2 RTP sockets, freed ~0.5 s after
  hang-up) and the process aborts.
- The Python reference to a `Call` is dropped when it is DISCONNECTED (`gone`), never later: a
  `Call` collected later hangs up whichever new call reused its slot.
- Only an INVITE from Kamailio's address may name a softphone (`X-Voice-Softphone`).
"""

from __future__ import annotations

import collections
import itertools
import time
from typing import Any

import pjsua2 as pj

from voice import telemetry
from voice.config import SipConfig
from voice.sip.callbacks import EngineCall
from voice.sip.conference import Conference
from voice.sip.events import CallIdentity, CallRefused, describe
from voice.sip.owner import EventPost
from voice.sip.uri import request_user, softphone_of


class CallSetup:
    """The live calls by key, and every step that adds or removes one (a `CallHandler`)."""

    def __init__(
        self,
        cfg: SipConfig,
        proxy: str | None,
        events: EventPost,
        counters: dict[str, int],
    ) -> None:
        self._cfg = cfg
        self._events = events
        self._counters = counters
        self.calls: dict[int, EngineCall] = {}
        self.conference = Conference(self.calls, counters, events.post)
        self.account: pj.Account | None = None  # set once the endpoint is up
        # Kamailio's address: only an INVITE from there may carry a trusted X-Voice-Softphone.
        self._proxy_source = _host_port(proxy) if proxy else None
        self._recent_setups: collections.deque[float] = collections.deque()
        self._keys = itertools.count(1)
        self.draining = False

    # -- CallHandler (pjsua2 callbacks) -------------------------------------------------------

    def incoming(self, account: pj.Account, iprm: pj.OnIncomingCallParam) -> None:
        key = next(self._keys)
        call = EngineCall(self, account, iprm.callId, key)
        info = call.getInfo()
        softphone = dialled = None
        if self._proxy_source is not None and iprm.rdata.srcAddress == self._proxy_source:
            # Kamailio removes any X-Voice-* header a client sent and names the authenticated
            # softphone itself; from anywhere else the header is ignored.
            message = iprm.rdata.wholeMsg
            softphone = softphone_of(message)
            dialled = request_user(message) if softphone else None
        identity = CallIdentity(
            key,
            info.callIdString,
            info.remoteUri,
            info.localUri,
            softphone=softphone,
            dialled=dialled,
        )
        refusal = self._admit(time.monotonic())
        prm = pj.CallOpParam()
        if refusal is not None:
            self._refuse(call, identity, prm, *refusal)
            return
        self.calls[key] = call
        self.conference.add_player(key)
        self._events.post("incoming", identity)
        if softphone is not None:
            # Ringing until the worker has checked the call (guardrails) and dialled out.
            prm.statusCode = 180
            call.answer(prm)
            return
        self._counters["calls_answered"] += 1
        prm.statusCode = 200
        call.answer(prm)
        telemetry.answered("inbound", call.invited)

    def post_call(self, call: EngineCall, method: str, *args: Any) -> None:
        self._events.post_call(call, method, *args)

    def media_active(self, call: EngineCall, media: pj.AudioMedia) -> None:
        self.conference.connect(call.key, media)

    def gone(self, call: EngineCall, code: int, reason: str) -> None:
        self.calls.pop(call.key, None)
        self.conference.call_ended(call.key)
        self._events.post_call(call, "disconnected", call.key, code, reason)

    # -- commands (from the loop, run on the owner thread) ------------------------------------

    def answer(
        self, key: int, code: int, reason: str, headers: tuple[tuple[str, str], ...]
    ) -> bool:
        call = self.calls.get(key)
        if call is None:
            return False
        prm = pj.CallOpParam()
        prm.statusCode = code
        if reason:
            prm.reason = reason
        _add_headers(prm, headers)
        if code < 300:
            self._counters["calls_answered"] += 1
        else:
            self._counters[f"calls_refused_{code}"] += 1
        call.answer(prm)
        if code < 300:
            telemetry.answered("inbound", call.invited)
        return True

    def dial(
        self, uri: str, from_uri: str | None, headers: tuple[tuple[str, str], ...], purpose: str
    ) -> CallIdentity:
        assert self.account is not None
        refusal = self._admit(time.monotonic())
        if refusal is not None:
            raise CallRefused(*refusal)
        key = next(self._keys)
        call = EngineCall(self, self.account, pj.PJSUA_INVALID_ID, key)
        self.calls[key] = call
        self.conference.add_player(key)
        prm = pj.CallOpParam(True)
        if from_uri:
            prm.txOption.localUri = from_uri
        _add_headers(prm, headers)
        try:
            call.makeCall(uri, prm)
        except pj.Error as exc:
            self.calls.pop(key, None)
            self.conference.drop_player(key)
            raise CallRefused(400, describe(exc)) from None
        info = call.getInfo()
        self._counters["calls_placed"] += 1
        identity = CallIdentity(
            key, info.callIdString, info.remoteUri, info.localUri, True, purpose=purpose
        )
        self._events.post("outgoing", identity)
        self._events.announce(call)
        return identity

    def hangup(self, key: int, code: int) -> None:
        call = self.calls.get(key)
        if call is not None:
            prm = pj.CallOpParam()
            prm.statusCode = code
            call.hangup(prm)

    # -- admission ----------------------------------------------------------------------------

    def _admit(self, now: float) -> tuple[int, str] | None:
        while self._recent_setups and now - self._recent_setups[0] > 1.0:
            self._recent_setups.popleft()
        if self.draining:
            return 503, "Service Unavailable"
        if len(self.calls) >= self._cfg.max_calls:
            return 486, "Busy Here"
        if len(self._recent_setups) >= self._cfg.max_setups_per_second:
            return 503, "Service Unavailable"
        self._recent_setups.append(now)
        return None

    def _refuse(
        self, call: EngineCall, identity: CallIdentity, prm: pj.CallOpParam, code: int, reason: str
    ) -> None:
        self._counters[f"calls_refused_{code}"] += 1
        prm.statusCode = code
        prm.reason = reason
        if code == 503:
            _add_headers(prm, (("Retry-After", "1"),))
        # Keep the reference until DISCONNECTED arrives (it may arrive inside answer()).
        self.calls[identity.key] = call
        self._events.post("refused", identity, code, reason)
        call.answer(prm)


def _add_headers(prm: pj.CallOpParam, headers: tuple[tuple[str, str], ...]) -> None:
    for name, value in headers:
        header = pj.SipHeader()
        header.hName, header.hValue = name, value
        prm.txOption.headers.append(header)


def _host_port(proxy: str) -> str | None:
    """`sip:127.0.0.1:5060;lr` -> `127.0.0.1:5060` (how pjsua2 reports a source address)."""
    rest = proxy.split(":", 1)[1] if proxy.lower().startswith("sip:") else proxy
    hostport = rest.split(";", 1)[0]
    return hostport if ":" in hostport else f"{hostport}:5060"
