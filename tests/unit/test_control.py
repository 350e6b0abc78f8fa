"""The control channel over a real unix socket: replies, errors, timeouts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from voice.control import ControlError, ControlServer, request


async def test_requests_reach_handlers_and_errors_come_back_as_text(tmp_path: Path) -> None:
    async def dial(to: str) -> dict[str, Any]:
        if to == "bad":
            raise ValueError("'to' must be a phone number")
        return {"call_id": 7, "to": to}

    server = ControlServer(tmp_path / "w0.sock", {"dial": dial})
    await server.start()
    try:
        assert (tmp_path / "w0.sock").stat().st_mode & 0o777 == 0o600
        reply = await request(tmp_path / "w0.sock", "dial", to="+12125550101")
        assert reply == {"ok": True, "call_id": 7, "to": "+12125550101"}
        with pytest.raises(ControlError, match="ValueError: 'to' must be a phone number"):
            await request(tmp_path / "w0.sock", "dial", to="bad")
        with pytest.raises(ControlError, match="bad arguments for dial"):
            await request(tmp_path / "w0.sock", "dial", number="1")
        with pytest.raises(ControlError, match="unknown op 'reboot'"):
            await request(tmp_path / "w0.sock", "reboot")
        # Garbage on the socket gets an error reply, and the server keeps serving.
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "w0.sock"))
        writer.write(b"\xff{not json\n")
        assert b"JSON object" in await reader.readline()
        writer.close()
        assert (await request(tmp_path / "w0.sock", "dial", to="1234"))["call_id"] == 7
    finally:
        await server.close()
    assert not (tmp_path / "w0.sock").exists()


async def test_a_missing_or_silent_worker_is_a_control_error(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="w9.sock"):
        await request(tmp_path / "w9.sock", "health")

    async def hang() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    server = ControlServer(tmp_path / "w1.sock", {"health": hang})
    await server.start()
    try:
        with pytest.raises(ControlError, match="no answer to health within 0.2 s"):
            await request(tmp_path / "w1.sock", "health", timeout=0.2)
    finally:
        await server.close()


async def test_a_stale_socket_from_a_killed_worker_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "w0.sock").write_text("left behind")

    async def health() -> dict[str, Any]:
        return {"calls": 0}

    server = ControlServer(tmp_path / "w0.sock", {"health": health})
    await server.start()
    try:
        assert (await request(tmp_path / "w0.sock", "health"))["calls"] == 0
    finally:
        await server.close()
