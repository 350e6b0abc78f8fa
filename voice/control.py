"""The control channel between the supervisor and each call worker.

One unix socket per worker, newline-delimited JSON: a request `{"op": NAME, ...}` gets exactly one
reply `{"ok": true, ...}` or `{"ok": false, "error": TEXT}`. A unix socket (not TCP) because the
channel is local by design and file permissions keep other users off it. One request per
connection keeps both ends trivial; the supervisor asks rarely (health, placing calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
Handler = Callable[..., Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The worker answered with an error, or could not be reached in time."""


class ControlServer:
    """Serves `handlers[op](**args)` on a unix socket; unknown ops and bad JSON are errors."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self._handlers = handlers
        self._server: asyncio.AbstractServer | None = None
        self._serving: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a worker that was killed
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._serving):  # a request still in a handler ends here
                task.cancel()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        try:
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), 5.0)
                reply = await self._dispatch(line)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                reply = {"ok": False, "error": "incomplete request"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._serving.discard(task)
            writer.close()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            op = request.pop("op")
        except (ValueError, AttributeError, KeyError, TypeError):
            return {"ok": False, "error": "request must be a JSON object with an 'op'"}
        handler = self._handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown op {op!r}"}
        try:
            result = await handler(**request)
        except TypeError as exc:
            return {"ok": False, "error": f"bad arguments for {op}: {exc}"}
        except Exception as exc:
            log.exception("control op %s failed", op)
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True, **result}


async def request(path: Path, op: str, timeout: float = 5.0, **args: Any) -> dict[str, Any]:
    """Send one request to the worker at `path`; raise ControlError unless it answers ok."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_REQUEST)
            try:
                writer.write(json.dumps({"op": op, **args}).encode() + b"\n")
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
    except TimeoutError:
        raise ControlError(f"{path.name}: no answer to {op} within {timeout:g} s") from None
    except OSError as exc:
        raise ControlError(f"{path.name}: {exc.strerror or exc}") from None
    try:
        reply = json.loads(line)
    except ValueError:
        raise ControlError(f"{path.name}: unreadable reply to {op}") from None
    if not reply.get("ok"):
        raise ControlError(f"{path.name}: {reply.get('error', 'failed')}")
    return reply
