"""What the SIP engine tells the asyncio side: a call's identity, its events, refusals.

Imported by every module of the engine and re-exported by `voice.sip.engine`, the one module the
rest of the code imports from.
"""

from __future__ import annotations

from dataclasses import dataclass

import pjsua2 as pj


@dataclass(frozen=True)
class CallIdentity:
    # pjsua reuses call slot ids at once; `key` is unique for the life of the process, so a
    # flow that outlives its call can never reach the call that took its slot.
    key: int
    sip_call_id: str
    remote_uri: str
    local_uri: str
    outbound: bool = False
    # A softphone's call relayed by Kamailio (`X-Voice-Softphone`): answered by the worker once
    # it has checked the call (`answer`), not at once. `dialled`: the Request-URI's user.
    softphone: str | None = None
    dialled: str | None = None
    # "ivr": the call runs the IVR; "leg": a call placed to join another (a collector, the
    # customer of a click-to-call), driven by whoever placed it.
    purpose: str = "ivr"


class CallRefused(Exception):
    """This worker will not place the call now (draining, full, bursting or a bad URI)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class Events:
    """What the engine tells the asyncio side; every method runs on the event loop."""

    def incoming(self, identity: CallIdentity) -> None: ...
    def outgoing(self, identity: CallIdentity) -> None: ...
    def confirmed(self, key: int) -> None: ...
    def digit(self, key: int, digit: str) -> None: ...
    def disconnected(self, key: int, code: int, reason: str) -> None: ...
    def refused(self, identity: CallIdentity, code: int, reason: str) -> None: ...
    def recording_closed(self, key: int) -> None: ...


def describe(exc: BaseException) -> str:
    """pjsua2 errors carry their text in `.info()`, not in `str()`."""
    if isinstance(exc, pj.Error):
        return f"{exc.title}: {exc.reason} (status {exc.status})"
    return str(exc) or type(exc).__name__
