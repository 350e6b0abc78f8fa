"""How the machine's call capacity is split into workers: ports, RTP ranges, control sockets.

Pure arithmetic over the config, shared by the supervisor (which starts the workers and
Kamailio) and the workers themselves, so both agree on every address without a handshake.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from voice.config import Config, ConfigError, SipConfig

LOOPBACK = "127.0.0.1"
MIN_RTP_PORTS = 16  # 4 calls x 2 sockets, twice over: ports are freed ~0.5 s after a hang-up


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    index: int
    sip: SipConfig  # the worker's own SIP listener and RTP range
    media_bind: str  # address RTP binds to (the far end sends media straight to the worker)
    proxy: str | None  # Kamailio, for the calls the worker places; None in developer mode
    control_path: Path  # unix socket of the worker's control channel

    @property
    def address(self) -> tuple[str, int]:
        return (self.sip.bind, self.sip.port)


def run_dir(cfg: Config) -> Path:
    """Sockets, pid files and Kamailio's generated config live here (never caller input)."""
    return cfg.data_dir / "run"


def uses_kamailio(cfg: Config) -> bool:
    """One worker is developer mode: it owns the public SIP port and no Kamailio runs."""
    return cfg.workers.resolved_count() != 1


def worker_specs(cfg: Config, cpus: int | None = None) -> list[WorkerSpec]:
    count = cfg.workers.resolved_count(cpus)
    sockets = run_dir(cfg) / "workers"
    if count == 1:
        return [
            WorkerSpec("w0", 0, cfg.sip, cfg.sip.bind, None, sockets / "w0.sock"),
        ]
    per_worker = cfg.sip.rtp_port_range // count
    if per_worker < MIN_RTP_PORTS:
        raise ConfigError(
            f"sip.rtp_port_range: {cfg.sip.rtp_port_range} ports cannot give {count} workers "
            f"{MIN_RTP_PORTS} RTP ports each; raise it to at least {count * MIN_RTP_PORTS}"
        )
    worker_ports = range(cfg.workers.sip_port, cfg.workers.sip_port + count)
    if cfg.sip.port in worker_ports:
        raise ConfigError(
            f"workers.sip_port: workers would use ports {worker_ports.start}.."
            f"{worker_ports.stop - 1}, which includes Kamailio's sip.port {cfg.sip.port}"
        )
    proxy_host = LOOPBACK if cfg.sip.bind in ("0.0.0.0", "") else cfg.sip.bind
    proxy = f"sip:{proxy_host}:{cfg.sip.port};lr"
    specs = []
    for i in range(count):
        sip = replace(
            cfg.sip,
            bind=LOOPBACK,
            port=cfg.workers.sip_port + i,
            udp=True,
            tcp=False,  # Kamailio talks to workers over loopback UDP
            rtp_port=cfg.sip.rtp_port + i * per_worker,
            rtp_port_range=per_worker,
        )
        specs.append(WorkerSpec(f"w{i}", i, sip, cfg.sip.bind, proxy, sockets / f"w{i}.sock"))
    return specs
