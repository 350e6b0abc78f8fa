"""The pjsua2 callback classes: an incoming INVITE, a call's state, media and DTMF.

pjsua2 calls these on the owner thread (it runs `libHandleEvents`). Each one hands its event to
a `CallHandler` and catches and logs everything: an exception escaping a callback keeps pjsua2
objects alive past `libDestroy()`, and exit aborts.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

import pjsua2 as pj

from voice import telemetry

log = logging.getLogger(__name__)


class CallHandler(Protocol):
    """Where the callbacks send what happened; every method runs on the owner thread."""

    def incoming(self, account: pj.Account, prm: pj.OnIncomingCallParam) -> None: ...
    def post_call(self, call: EngineCall, method: str, *args: Any) -> None: ...
    def gone(self, call: EngineCall, code: int, reason: str) -> None: ...
    def media_active(self, call: EngineCall, media: pj.AudioMedia) -> None: ...


class EngineAccount(pj.Account):
    def __init__(self, handler: CallHandler) -> None:
        super().__init__()
        self._handler = handler

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:  # noqa: N802
        try:
            self._handler.incoming(self, prm)
        except Exception:
            log.exception("onIncomingCall failed")


class EngineCall(pj.Call):
    def __init__(self, handler: CallHandler, account: pj.Account, call_id: int, key: int) -> None:
        super().__init__(account, call_id)
        self._handler = handler
        self.key = key
        # Events of a call we place are held until `outgoing` has told the loop about it.
        self.announced = call_id != pj.PJSUA_INVALID_ID
        self.inbound = self.announced  # an incoming call has its pjsua id at once
        self.invited = time.monotonic()  # its INVITE arrived, or ours is about to leave
        self.early: list[tuple[str, tuple[Any, ...]]] = []

    def onCallState(self, prm: pj.OnCallStateParam) -> None:  # noqa: N802
        try:
            info = self.getInfo()
            if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
                if not self.inbound:
                    telemetry.answered("outbound", self.invited)
                self._handler.post_call(self, "confirmed", self.key)
            elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                # The handler drops its reference to this Call here: one collected later would
                # hang up whichever new call reused its slot.
                self._handler.gone(self, info.lastStatusCode, info.lastReason)
        except Exception:
            log.exception("onCallState failed")

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:  # noqa: N802
        try:
            info = self.getInfo()
            for media in info.media:
                if (
                    media.type == pj.PJMEDIA_TYPE_AUDIO
                    and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE
                ):
                    self._handler.media_active(self, self.getAudioMedia(media.index))
        except Exception:
            log.exception("onCallMediaState failed")

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:  # noqa: N802
        # onDtmfEvent fires for the same key too; digits are counted here only (RFC 2833 and INFO).
        try:
            self._handler.post_call(self, "digit", self.key, str(prm.digit))
        except Exception:
            log.exception("onDtmfDigit failed")
