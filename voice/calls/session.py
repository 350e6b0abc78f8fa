"""One call the worker runs = one `CallSession`; the worker's `CallTable` holds them.

A session is keyed by the engine key of the SIP call it was started for (the caller's call,
the call a worker placed to run the IVR, the collector's first leg of a click-to-call, or the
softphone's INVITE), and found by its journaled call id once it has one. Legs a session places
(a collector rung for a transfer, a click-to-call's customer) are SIP calls of that session,
not sessions of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

from voice.calls.call import SipCall
from voice.calls.journal import CallLog
from voice.calls.media import CallMedia


@dataclass
class CallSession:
    """A call's identity and SIP call, then (once journaled) its log and media, and the task
    running its script."""

    call: SipCall
    task: asyncio.Task[None] | None = None
    log: CallLog | None = None
    media: CallMedia | None = None

    @property
    def key(self) -> int:
        return self.call.key

    @property
    def call_id(self) -> int | None:
        return self.log.call_id if self.log is not None else None


class CallTable:
    """The sessions of one worker, by engine key and by call id."""

    def __init__(self) -> None:
        self._by_key: dict[int, CallSession] = {}
        self._by_id: dict[int, CallSession] = {}

    def add(self, session: CallSession) -> None:
        self._by_key[session.key] = session

    def journaled(self, session: CallSession, log: CallLog, media: CallMedia) -> None:
        """The session's call has its row: found by call id from now on."""
        session.log, session.media = log, media
        self._by_id[log.call_id] = session

    def forget(self, key: int) -> None:
        """Its script is over (the media's recording may still be closing: Recorder)."""
        session = self._by_key.pop(key, None)
        if session is not None and session.call_id is not None:
            self._by_id.pop(session.call_id, None)

    def by_key(self, key: int) -> CallSession | None:
        return self._by_key.get(key)

    def by_id(self, call_id: int) -> CallSession | None:
        return self._by_id.get(call_id)

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[CallSession]:
        return iter(list(self._by_key.values()))

    def call_ids(self) -> list[int]:
        return sorted(self._by_id)
