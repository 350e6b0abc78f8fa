"""The generated Kamailio config: what it says, and that Kamailio itself accepts it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from voice.config import Config, from_mapping
from voice.routing.kamailio_config import (
    TEMPLATE,
    WorkerAddress,
    local_address,
    render_config,
    render_dispatcher_list,
)

KAMAILIO = shutil.which("kamailio", path=f"{os.environ.get('PATH', '')}:/usr/sbin")


def config(**sections: dict[str, Any]) -> Config:
    return from_mapping({"sip": {"bind": "127.0.0.1", "port": 5060}, **sections})


def workers(count: int) -> list[WorkerAddress]:
    return [WorkerAddress(f"w{i}", "127.0.0.1", 5100 + i) for i in range(count)]


def kamailio_check(text: str, folder: Path) -> str:
    if KAMAILIO is None:
        if os.environ.get("CI"):
            pytest.fail("kamailio is not installed: run `make test`")
        pytest.skip("kamailio is not installed (`make test` installs the Debian package)")
    path = folder / "kamailio.cfg"
    path.write_text(text)
    out = subprocess.run(
        [KAMAILIO, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


@pytest.mark.parametrize(
    ("count", "sections", "listening"),
    [
        (1, {}, ["udp: 127.0.0.1 [127.0.0.1]:5060", "tcp: 127.0.0.1 [127.0.0.1]:5060"]),
        (20, {"sip": {"bind": "127.0.0.1", "port": 5060, "tcp": False}}, ["udp: 127.0.0.1"]),
        (
            3,
            {"kamailio": {"gateway": "gw.example.net:5080", "trunks": ["10.0.0.0/8", "::1"]}},
            ["udp: 127.0.0.1"],
        ),
        (2, {"sip": {"bind": "127.0.0.1", "port": 5070, "udp": False}}, ["tcp: 127.0.0.1"]),
        (2, {"sip": {"bind": "0.0.0.0", "port": 5060, "tcp": False}}, ["udp: 127.0.0.1"]),
    ],
    ids=["1-worker", "20-workers-udp-only", "gateway-and-trunk-networks", "tcp-only", "wildcard"],
)
def test_kamailio_accepts_the_rendered_config(
    tmp_path: Path, count: int, sections: dict[str, Any], listening: list[str]
) -> None:
    text = render_config(config(**sections), workers(count), tmp_path)
    out = kamailio_check(text, tmp_path)
    for line in listening:
        assert line in out


def test_header_carries_the_config_values(tmp_path: Path) -> None:
    cfg = config(
        kamailio={
            "trunks": ["203.0.113.7", "10.1.0.0/16"],
            "gateway": "gw.example.net:5080",
            "realm": "voice.example",
            "fail_over_ms": 1500,
        }
    )
    text = render_config(cfg, workers(2), tmp_path)
    header = text.split(TEMPLATE.read_text(), 1)[0]
    assert '#!define TRUNKS "203.0.113.7/32,10.1.0.0/16"' in header
    assert '#!define GATEWAY "gw.example.net:5080"' in header and "#!define WITH_GATEWAY" in header
    assert '#!define REALM "voice.example"' in header
    assert "#!define FAIL_OVER_MS 1500" in header
    assert f'#!define DB_URL "text://{tmp_path.resolve()}/db"' in header
    assert "listen=udp:127.0.0.1:5060" in header and "listen=tcp:127.0.0.1:5060" in header
    assert text.endswith(TEMPLATE.read_text())


def test_no_gateway_no_trunks_no_tcp(tmp_path: Path) -> None:
    cfg = config(sip={"bind": "127.0.0.1", "port": 5060, "tcp": False}, kamailio={"trunks": []})
    header = render_config(cfg, workers(1), tmp_path).split(TEMPLATE.read_text(), 1)[0]
    assert "GATEWAY" not in header
    assert "WITH_TCP" not in header and "listen=tcp" not in header
    assert '#!define TRUNKS "255.255.255.255/32"' in header  # matches no real source


def test_listen_lines_for_wildcard_and_tcp_only() -> None:
    wildcard = render_config(config(sip={"bind": "0.0.0.0", "port": 5062}), workers(1), Path("/r"))
    assert "port=5062\nmhomed=1" in wildcard and "listen=" not in wildcard
    tcp_only = render_config(
        config(sip={"bind": "192.0.2.10", "port": 5062, "udp": False}), workers(1), Path("/r")
    )
    # Workers reach Kamailio over loopback UDP even when the public side is TCP only.
    assert "listen=udp:127.0.0.1:5062\nlisten=tcp:192.0.2.10:5062" in tcp_only


def test_local_address_is_where_workers_and_probes_reach_kamailio() -> None:
    assert local_address(config(sip={"bind": "0.0.0.0", "port": 5060})) == ("127.0.0.1", 5060)
    assert local_address(config(sip={"bind": "192.0.2.10", "port": 5070})) == ("192.0.2.10", 5070)
    tcp_only = config(sip={"bind": "192.0.2.10", "port": 5070, "udp": False})
    assert local_address(tcp_only) == ("127.0.0.1", 5070)


def test_dispatcher_list_names_every_worker() -> None:
    text = render_dispatcher_list(
        [WorkerAddress("w0", "127.0.0.1", 5100), WorkerAddress("w1", "::1", 5101)]
    )
    assert text.splitlines()[1:] == [
        "1 sip:127.0.0.1:5100 0 0 duid=w0",
        "1 sip:[::1]:5101 0 0 duid=w1",
    ]


@pytest.mark.parametrize(
    ("workers_", "message"),
    [
        ([], "at least one call worker"),
        ([WorkerAddress("w0", "127.0.0.1", 1), WorkerAddress("w0", "127.0.0.1", 2)], "unique"),
        ([WorkerAddress("w 0", "127.0.0.1", 1)], "letters, digits"),
        ([WorkerAddress("w0", "localhost", 5100)], "does not appear to be an IPv4 or IPv6"),
        ([WorkerAddress("w0", "127.0.0.1", 70000)], "out of range"),
    ],
)
def test_bad_workers_are_refused(workers_: list[WorkerAddress], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_config(config(), workers_, Path("/run"))


def test_run_dirs_the_script_cannot_quote_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot quote"):
        render_config(config(), workers(1), tmp_path / 'a"b')
    with pytest.raises(ValueError, match="too deep for a unix socket"):
        render_config(config(), workers(1), tmp_path / ("x" * 120))


def routes(script: str) -> dict[str, str]:
    """Top-level blocks of the routing script by name (request_route, route[X], ...)."""
    blocks, name, depth, body = {}, None, 0, []
    for line in script.splitlines():
        if depth == 0:
            match = re.match(r"^(\w+(?:\[\w+\])?)\s*\{", line)
            if match:
                name, body = match.group(1), []
        if name is not None:
            body.append(line)
            depth += line.count("{") - line.count("}")
            if depth == 0:
                blocks[name] = "\n".join(body)
                name = None
    return blocks


def test_only_worker_requests_can_reach_the_gateway() -> None:
    # A structural guard against toll fraud: the gateway is named in one place, the route
    # taken only by requests whose source ip:port is a worker.
    blocks = routes(TEMPLATE.read_text())
    assert [name for name, body in blocks.items() if "GATEWAY" in body] == ["route[FROM_WORKER]"]
    main = blocks["request_route"]
    assert re.search(r'if \(ds_is_from_list\("1", "2"\)\) \{\s*route\(FROM_WORKER\);', main)
    assert "route(FROM_WORKER)" not in "".join(
        body for name, body in blocks.items() if name != "request_route"
    )
    # Callers' X-Voice-* headers are stripped before Kamailio adds its own.
    for name in ("route[FROM_TRUNK]", "route[FROM_SOFTPHONE]"):
        body = blocks[name]
        assert body.index('remove_hf_re("^X-Voice-")') < body.index("append_hf(")
