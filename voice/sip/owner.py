"""The one thread that owns pjsua2, and the two ways across to asyncio.

Commands in: asyncio code submits callables (`submit`, `run`) that the owner thread runs between
two `libHandleEvents`, so no other thread ever calls pjsua2 (one that does without
`libRegisterThread` aborts the process). Events out: `EventPost` hands callbacks' events to the
loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from voice.sip.callbacks import EngineCall
from voice.sip.events import Events, describe

log = logging.getLogger(__name__)
T = TypeVar("T")


class OwnerThread:
    """Runs `init`, then `step` until stopped, then `shutdown`, all on one thread.

    `step` must call `serve_commands()`; `shutdown` must call `cancel_pending()` (pjlib objects
    die on this thread, and no command may wait for ever on one that is gone)."""

    def __init__(
        self,
        init: Callable[[], None],
        step: Callable[[], None],
        shutdown: Callable[[], None],
    ) -> None:
        self._init, self._step, self._shutdown = init, step, shutdown
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future]] = (
            queue.SimpleQueue()
        )
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="pjsua2-owner", daemon=True)

    def start(self, timeout: float) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("SIP engine did not start in time")
        if self._startup_error is not None:
            raise RuntimeError(f"SIP engine failed to start: {describe(self._startup_error)}")

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._stopping.is_set():
            future.set_exception(RuntimeError("SIP engine is stopping"))
        else:
            self._commands.put((fn, future))
        return future

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self.submit(fn))

    def stop(self, timeout: float) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def serve_commands(self) -> None:
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def cancel_pending(self) -> None:
        while True:
            try:
                _, future = self._commands.get_nowait()
            except queue.Empty:
                break
            future.cancel()

    def _main(self) -> None:
        try:
            self._init()
        except BaseException as exc:  # reported to start(); the thread then ends
            self._startup_error = exc
            self._shutdown()  # pjlib objects must die on this thread, or exit aborts
            self._ready.set()
            return
        self._ready.set()
        try:
            while not self._stopping.is_set():
                self._step()
        except BaseException:
            log.exception("SIP owner loop crashed")
        finally:
            self._shutdown()


class EventPost:
    """Hands events to `events` on the loop; called on the owner thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, events: Events) -> None:
        self._loop = loop
        self._events = events

    def post(self, method: str, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(getattr(self._events, method), *args)
        except RuntimeError:  # loop closed during shutdown
            log.debug("dropped %s event: loop closed", method)

    def post_call(self, call: EngineCall, method: str, *args: Any) -> None:
        if call.announced:
            self.post(method, *args)
        else:
            call.early.append((method, args))

    def announce(self, call: EngineCall) -> None:
        """The loop knows the call we placed now: its held events follow."""
        call.announced = True
        for method, args in call.early:
            self.post(method, *args)
        call.early.clear()
