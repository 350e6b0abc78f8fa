"""Kamailio as the SIP front of the call fleet: its process, its RPC and its credentials.

`Kamailio` writes the generated script (voice/routing/kamailio_config.py), the dispatcher list
and the softphone credential tables into a run folder, checks the script with `kamailio -c`,
runs the process and stops it with nothing left behind. RPC goes over a unix datagram socket in
the run folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from voice.config import Config
from voice.routing.kamailio_config import (
    CREDENTIALS_DIR,
    DISPATCHER_FILE,
    RPC_SOCKET,
    WorkerAddress,
    check_workers,
    local_address,
    render_config,
    render_dispatcher_list,
)
from voice.routing.softphones import export_credentials, read_dbtext

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
CHECK_TIMEOUT_S = 20.0
PROBE_TIMEOUT_S = 0.3  # one OPTIONS probe
RPC_TIMEOUT_S = 2.0

CONFIG_FILE = "kamailio.cfg"
PID_FILE = "kamailio.pid"
LOG_FILE = "kamailio.log"


class KamailioError(RuntimeError):
    """Kamailio refused its config, did not start, or did not answer in time."""


def default_run_dir(cfg: Config) -> Path:
    """Where `voice serve` keeps Kamailio's files; the CLI applies credential changes there."""
    return cfg.data_dir / "run" / "kamailio"


def resolve_binary(name: str) -> str:
    """`kamailio.binary` as a path; Debian installs it in /usr/sbin, often not on a user's PATH."""
    found = shutil.which(name)
    if found is None and "/" not in name:
        candidates = (f"{d}/{name}" for d in ("/usr/sbin", "/usr/local/sbin"))
        found = next((path for path in candidates if os.access(path, os.X_OK)), None)
    if found is None:
        raise KamailioError(
            f"kamailio.binary: {name!r} not found (install the Debian package `kamailio`)"
        )
    return found


def apply_credentials(cfg: Config, run_dir: Path) -> list[str]:
    """Export softphone credentials into `run_dir`; drop registrations that no longer hold.

    Returns the usernames that were removed or got a new password since the last export.
    Their registrations are removed through RPC when a Kamailio is running there.
    """
    folder = Path(run_dir) / CREDENTIALS_DIR
    before = read_dbtext(folder)
    after = export_credentials(
        cfg.database_url, cfg.kamailio.realm, folder, busy_timeout_ms=cfg.database.busy_timeout_ms
    )
    stale = sorted(user for user, ha1 in before.items() if after.get(user) != ha1)
    socket_path = Path(run_dir) / RPC_SOCKET
    if stale and socket_path.exists():
        for user in stale:
            try:
                rpc(socket_path, "ul.rm", "location", user)
            except KamailioError as exc:
                # "AOR not found" when it was not registered; nothing to drop.
                log.debug("ul.rm %s: %s", user, exc)
    return stale


def rpc(socket_path: Path, method: str, *params: Any, timeout: float = RPC_TIMEOUT_S) -> Any:
    """One JSON-RPC call over Kamailio's unix datagram socket; returns the result."""
    request = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        # An abstract-namespace reply address: no file to clean up, no path length issue.
        s.bind(f"\0collections-voice-rpc-{os.getpid()}-{secrets.token_hex(6)}")
        s.settimeout(timeout)
        try:
            s.sendto(json.dumps(request).encode(), str(socket_path))
            reply = json.loads(s.recv(1 << 20))
        except (OSError, ValueError) as exc:
            raise KamailioError(f"RPC {method}: {exc}") from exc
    if "error" in reply:
        raise KamailioError(f"RPC {method}: {reply['error'].get('message', reply['error'])}")
    return reply.get("result")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def sip_options(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Send one OPTIONS over UDP; return the status line of the reply, or None."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    call_id = uuid.uuid4().hex
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        local = s.getsockname()[1]
        h = f"[{host}]" if family == socket.AF_INET6 else host
        msg = (
            f"OPTIONS sip:{h}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {h}:{local};branch=z9hG4bK{call_id[:16]};rport\r\n"
            f"From: <sip:probe@{h}:{local}>;tag={call_id[:8]}\r\n"
            f"To: <sip:{h}:{port}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        s.settimeout(timeout)
        try:
            s.sendto(msg.encode(), (host, port))
            data = s.recv(65535)
        except OSError:  # timeout, or ICMP port unreachable while nothing listens yet
            return None
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


class Kamailio:
    """One Kamailio process in front of `workers`, its files in `run_dir`."""

    def __init__(self, cfg: Config, workers: Sequence[WorkerAddress], run_dir: Path) -> None:
        check_workers(workers)
        self.cfg = cfg
        self.workers = tuple(workers)
        self.run_dir = Path(run_dir).resolve()
        self.config_path = self.run_dir / CONFIG_FILE
        self.log_path = self.run_dir / LOG_FILE
        self.rpc_path = self.run_dir / RPC_SOCKET
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    async def start(self) -> None:
        """Write the files, check the script, start Kamailio and wait until it answers OPTIONS."""
        if self.alive:
            raise KamailioError("Kamailio is already running")
        binary = resolve_binary(self.cfg.kamailio.binary)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        await self.stop()  # the remains of a run that died, if any
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            # Children of a Kamailio whose supervisor was killed still hold the port.
            await self._kill_leftovers(int((self.run_dir / PID_FILE).read_text().split()[0]))
        with contextlib.suppress(FileNotFoundError):
            self.rpc_path.unlink()  # a socket left by a killed run would block the bind
        text = render_config(self.cfg, self.workers, self.run_dir)
        await asyncio.to_thread(self.refresh_credentials)  # a database query: off the loop
        _write_atomic(self.run_dir / DISPATCHER_FILE, render_dispatcher_list(self.workers))
        _write_atomic(self.config_path, text)
        await self._check_config(binary)
        with self.log_path.open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                binary,
                *("-DD", "-E", "-f", str(self.config_path), "-Y", str(self.run_dir)),
                *("-P", str(self.run_dir / PID_FILE), "-w", str(self.run_dir)),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() can end every child
            )
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _check_config(self, binary: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            binary,
            *("-c", "-f", str(self.config_path), "-Y", str(self.run_dir)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), CHECK_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise KamailioError(f"`kamailio -c` did not finish in {CHECK_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            raise KamailioError(
                f"Kamailio rejected {self.config_path}:\n{out.decode(errors='replace')[-3000:]}"
            )

    async def _wait_ready(self) -> None:
        host, port = local_address(self.cfg)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.returncode is not None:
                raise KamailioError(
                    f"Kamailio exited with {self._proc.returncode} at start-up:\n{self.log_tail()}"
                )
            status = await asyncio.to_thread(sip_options, host, port)
            if status is not None and " 200 " in f"{status} ":
                log.info("Kamailio %d answers on %s:%d", self._proc.pid, host, port)
                return
            await asyncio.sleep(0.1)
        raise KamailioError(
            f"Kamailio did not answer OPTIONS on {host}:{port} within {START_TIMEOUT_S} s:\n"
            f"{self.log_tail()}"
        )

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Kamailio stops its children), then SIGKILL; no child is left behind."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("Kamailio %d ignored SIGTERM for %.1f s: killing it", proc.pid, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # main still alive: the group is ours
                await proc.wait()
        # A main process that was killed (-9, OOM) leaves its children running, holding the
        # SIP port: end them too.
        await self._kill_leftovers(proc.pid)
        self._proc = None

    def _leftovers(self, pgid: int) -> list[int]:
        """Live processes of Kamailio's process group `pgid` running our config file."""
        marker = str(self.config_path).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            # /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may contain spaces.
            fields = stat.rsplit(")", 1)[-1].split()
            if len(fields) > 2 and int(fields[2]) == pgid and marker in cmdline:
                found.append(int(entry.name))
        return found

    async def _kill_leftovers(self, pgid: int) -> None:
        for _ in range(40):  # 2 s at most; a killed orphan is reaped by init at once
            pids = self._leftovers(pgid)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.05)
        log.error("Kamailio processes %s of group %d did not die", self._leftovers(pgid), pgid)

    def refresh_credentials(self) -> None:
        """Re-export softphone credentials from the database; applies without a restart.

        db_text (db_mode 1) re-reads the table when its mtime changes. Registrations of
        softphones that were removed or got a new password are dropped at once.
        """
        apply_credentials(self.cfg, self.run_dir)

    def rpc(self, method: str, *params: Any, timeout: float = RPC_TIMEOUT_S) -> Any:
        """Call a Kamailio RPC command (e.g. "ul.dump", "dispatcher.list"); return its result."""
        return rpc(self.rpc_path, method, *params, timeout=timeout)

    def registered(self, username: str) -> list[str]:
        """Contacts registered for a softphone user (empty when it is not registered)."""
        try:
            result = self.rpc("ul.lookup", "location", username)
        except KamailioError:
            return []  # ul.lookup answers "AOR not found" as an error
        return [c["Contact"]["Address"] for c in result.get("Contacts", [])]

    def worker_states(self) -> dict[str, str]:
        """Worker name -> dispatcher flags ("AP" active+probing, "IP" inactive, ...)."""
        result = self.rpc("dispatcher.list")
        states: dict[str, str] = {}
        for record in result.get("RECORDS", []):
            for target in record["SET"]["TARGETS"]:
                dest = target["DEST"]
                states[dest["ATTRS"].get("DUID") or dest["URI"]] = dest["FLAGS"]
        return states
