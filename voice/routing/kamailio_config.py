"""Kamailio's generated config: the script and the dispatcher list for a `Config` and its workers.

`render_config` turns `Config` plus the worker addresses into a Kamailio 5.6 script: a header of
`#!define`s and listen lines generated here, then the routing logic from `kamailio.cfg.tmpl`
(readable on its own). Pure text, no process: voice/routing/kamailio.py writes it into the run
folder and runs Kamailio on it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from voice.config import Config

TEMPLATE = Path(__file__).with_name("kamailio.cfg.tmpl")
WORKER_SET = 1  # dispatcher set id of the call workers
PROBE_INTERVAL_S = 5  # OPTIONS to every worker this often; a dead one is skipped until it answers
RING_MS = 120_000  # once a worker has answered provisionally, how long the call may ring
MAX_UNIX_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin

# The run folder's files the script names.
DISPATCHER_FILE = "dispatcher.list"
CREDENTIALS_DIR = "db"
RPC_SOCKET = "rpc.sock"

_WILDCARDS = ("", "0.0.0.0", "::")
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./+@%=, -]+")  # quoted into the script: no quote, no $


@dataclass(frozen=True)
class WorkerAddress:
    name: str  # "w0"
    host: str  # "127.0.0.1"
    port: int

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:{host}:{self.port}"


def local_address(cfg: Config) -> tuple[str, int]:
    """Where processes on this machine reach Kamailio over UDP (workers, probes)."""
    bind = cfg.sip.bind
    if bind in _WILDCARDS or not cfg.sip.udp:
        return ("::1" if bind == "::" else "127.0.0.1", cfg.sip.port)
    return (bind, cfg.sip.port)


def render_config(cfg: Config, workers: Sequence[WorkerAddress], run_dir: Path) -> str:
    """The complete Kamailio script for this config and these workers."""
    check_workers(workers)
    run_dir = Path(run_dir).resolve()
    rpc_path = _safe_path(run_dir / RPC_SOCKET)
    if len(rpc_path) > MAX_UNIX_PATH:
        raise ValueError(
            f"run folder {run_dir} is too deep for a unix socket path "
            f"({len(rpc_path)} > {MAX_UNIX_PATH} bytes): use a shorter data.dir"
        )
    k = cfg.kamailio
    trunks = ",".join(str(ipaddress.ip_network(t, strict=False)) for t in k.trunks)
    lines = [
        "#!KAMAILIO",
        "# Generated at every start by voice/routing/kamailio_config.py: edit config.toml.",
        f'#!define REALM "{k.realm}"',
        # An empty trunk list must match nothing; 255.255.255.255/32 is never a source.
        f'#!define TRUNKS "{trunks or "255.255.255.255/32"}"',
        f"#!define FAIL_OVER_MS {k.fail_over_ms}",
        f"#!define RING_MS {RING_MS}",
        f"#!define PROBE_INTERVAL_S {PROBE_INTERVAL_S}",
        f'#!define DB_URL "text://{_safe_path(run_dir / CREDENTIALS_DIR)}"',
        f'#!define DS_LIST "{_safe_path(run_dir / DISPATCHER_FILE)}"',
        f'#!define RPC_SOCKET "{rpc_path}"',
    ]
    if k.gateway:
        lines += ["#!define WITH_GATEWAY", f'#!define GATEWAY "{k.gateway}"']
    if cfg.sip.tcp:
        lines.append("#!define WITH_TCP")
    lines += _listen_lines(cfg)
    return "\n".join(lines) + "\n\n" + TEMPLATE.read_text(encoding="utf-8")


def render_dispatcher_list(workers: Sequence[WorkerAddress]) -> str:
    """Dispatcher set 1: one line per worker, its name as the duid attribute."""
    check_workers(workers)
    rows = [f"{WORKER_SET} {w.uri} 0 0 duid={w.name}" for w in workers]
    return "# setid destination flags priority attrs\n" + "\n".join(rows) + "\n"


def _listen_lines(cfg: Config) -> list[str]:
    bind, port = cfg.sip.bind, cfg.sip.port
    if bind in _WILDCARDS:
        # `listen=0.0.0.0` would put 0.0.0.0 in Via and Record-Route. Without a listen line
        # Kamailio binds every interface address (UDP, and TCP unless disabled); mhomed picks
        # the right source address per destination. UDP is always there (workers need it).
        return [f"port={port}", "mhomed=1"]
    if not re.fullmatch(r"[A-Za-z0-9.\-:]+", bind):
        raise ValueError(f"sip.bind: {bind!r} is not an address")
    host = f"[{bind}]" if ":" in bind else bind
    lines = []
    if cfg.sip.udp:
        lines.append(f"listen=udp:{host}:{port}")
    else:
        # The workers talk to Kamailio over loopback UDP even when the public side is TCP only.
        lines.append(f"listen=udp:127.0.0.1:{port}")
    if cfg.sip.tcp:
        lines.append(f"listen=tcp:{host}:{port}")
    return lines


def check_workers(workers: Sequence[WorkerAddress]) -> None:
    if not workers:
        raise ValueError("Kamailio needs at least one call worker")
    names = [w.name for w in workers]
    if len(set(names)) != len(names):
        raise ValueError(f"worker names must be unique: {names}")
    for w in workers:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", w.name):
            raise ValueError(f"worker name {w.name!r}: letters, digits, _ and - only")
        ipaddress.ip_address(w.host)  # raises ValueError naming the bad address
        if not 1 <= w.port <= 65535:
            raise ValueError(f"worker {w.name}: port {w.port} out of range")


def _safe_path(path: Path) -> str:
    text = str(path)
    if not _SAFE_PATH.fullmatch(text):
        raise ValueError(f"path {text!r} has characters Kamailio's config cannot quote")
    return text
