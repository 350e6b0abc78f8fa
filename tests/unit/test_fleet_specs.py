"""How the config is split into workers: ports, RTP ranges, sockets, developer mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from voice.config import ConfigError, from_mapping
from voice.fleet import MIN_RTP_PORTS, uses_kamailio, worker_specs


def test_developer_mode_is_one_worker_on_the_public_port(tmp_path: Path) -> None:
    cfg = from_mapping({"workers": {"count": 1}, "data": {"dir": str(tmp_path)}})
    [spec] = worker_specs(cfg)
    assert not uses_kamailio(cfg)
    assert spec.sip == cfg.sip and spec.proxy is None
    assert spec.control_path == tmp_path / "run" / "workers" / "w0.sock"


def test_fleet_workers_get_disjoint_loopback_ports_and_rtp_ranges(tmp_path: Path) -> None:
    cfg = from_mapping(
        {
            "workers": {"count": 5, "sip_port": 6100},
            "sip": {"port": 5070, "bind": "0.0.0.0", "rtp_port": 30000, "rtp_port_range": 500},
            "data": {"dir": str(tmp_path)},
        }
    )
    specs = worker_specs(cfg)
    assert uses_kamailio(cfg)
    assert [s.name for s in specs] == ["w0", "w1", "w2", "w3", "w4"]
    assert [s.address for s in specs] == [("127.0.0.1", 6100 + i) for i in range(5)]
    assert all(s.sip.udp and not s.sip.tcp for s in specs)
    ranges = [range(s.sip.rtp_port, s.sip.rtp_port + s.sip.rtp_port_range) for s in specs]
    assert all(len(r) == 100 for r in ranges)
    ports = [p for r in ranges for p in r]
    assert len(ports) == len(set(ports)) and min(ports) == 30000 and max(ports) < 30500
    # Calls the workers place go out through Kamailio; media binds where the far end sends it.
    assert {s.proxy for s in specs} == {"sip:127.0.0.1:5070;lr"}
    assert {s.media_bind for s in specs} == {"0.0.0.0"}
    assert len({s.control_path for s in specs}) == 5


def test_default_count_is_sized_to_the_machine(tmp_path: Path) -> None:
    cfg = from_mapping({"data": {"dir": str(tmp_path)}, "sip": {"rtp_port_range": 4000}})
    assert len(worker_specs(cfg, cpus=2)) == 16


def test_too_few_rtp_ports_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    cfg = from_mapping({"workers": {"count": 20}, "sip": {"rtp_port_range": 100}})
    with pytest.raises(ConfigError, match=rf"sip.rtp_port_range: .*{20 * MIN_RTP_PORTS}"):
        worker_specs(cfg)


def test_worker_ports_must_not_include_kamailios_port() -> None:
    cfg = from_mapping({"workers": {"count": 4, "sip_port": 5058}, "sip": {"port": 5060}})
    with pytest.raises(ConfigError, match=r"workers.sip_port: .*5058..5061.*sip.port 5060"):
        worker_specs(cfg)
