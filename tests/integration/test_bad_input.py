"""Bad input never costs the worker: garbage SIP, hang-ups mid-prompt, one call too many."""

from __future__ import annotations

import random
import socket
import subprocess
import time
import uuid

from sqlalchemy import func, select

from accounts.db import make_engine, make_sessions
from accounts.models import Call
from tests.integration.conftest import (
    Server,
    free_port,
    last_call_id,
    run_ua,
    sip_options,
    ua_command,
    wait_for,
)

KNOWN = "+12125550101"


def worker_pid(server: Server) -> int:
    [worker] = server.health()["workers"]
    assert worker["alive"], worker
    return int(worker["pid"])


def assert_serves_a_call(server: Server) -> None:
    [report] = run_ua(server, "audio;dtmf:1;audio;wait:0.5;hangup", caller=KNOWN)
    assert report["code"] == 200 and not report["error"], report


def garbage_datagrams() -> list[bytes]:
    rng = random.Random(4475)
    target = "sip:ivr@127.0.0.1"
    return [
        b"",
        b"\r\n\r\n",
        bytes(rng.randrange(256) for _ in range(600)),
        b"INVITE",
        f"INVITE {target} SIP/2.0\r\n\r\n".encode(),  # no mandatory headers
        f"INVITE {target} SIP/7.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9\r\n\r\n".encode(),
        (
            f"INVITE {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
            "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: g1\r\n"
            "CSeq: 1 INVITE\r\nContent-Length: 99999\r\n\r\nv=0\r\n"
        ).encode(),
        (
            f"INVITE {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKy\r\n"
            "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: g2\r\n"
            "CSeq: banana INVITE\r\nContent-Type: application/sdp\r\nContent-Length: 9\r\n\r\n"
            "m=audio x"
        ).encode(),
        b"OPTIONS sip:\xff\xfe@127.0.0.1 SIP/2.0\r\nVia: \xc3\x28\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKnone\r\n\r\n",
        b"X" * 60000,
    ]


def test_garbage_sip_leaves_the_worker_serving(server: Server) -> None:
    pid = worker_pid(server)
    # Replies, if any, go to the Via port 9 (discard) and are lost, as for a real attacker.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        for datagram in garbage_datagrams():
            udp.sendto(datagram, ("127.0.0.1", server.sip_port))
    for datagram in garbage_datagrams()[2:9]:
        with socket.create_connection(("127.0.0.1", server.sip_port), timeout=2) as tcp:
            tcp.sendall(datagram)
    assert sip_options(server.sip_port, timeout=2.0)
    assert_serves_a_call(server)
    assert worker_pid(server) == pid, "the worker was restarted"


def test_hangup_during_prompt_writes_the_note_and_next_call_works(server: Server) -> None:
    pid = worker_pid(server)
    # Greeting (~2 s), then the caller hangs up while the menu prompt is playing.
    [report] = run_ua(server, "audio;wait:3;hangup", caller=KNOWN)
    assert report["code"] == 200, report
    call_id = last_call_id(server, KNOWN)
    journal = server.journal()
    account = server.ledger().account_by_number("10042")

    def note() -> str | None:
        bodies = [n.body for n in journal.notes_for_account(account.id) if n.call_id == call_id]
        return bodies[0] if bodies else None

    body = wait_for(note)
    assert body and "Ended: caller hung up." in str(body) and "No menu actions." in str(body)
    kinds = [kind for kind, _ in journal.events(call_id)]
    assert kinds[-1] == "prompt" and "identified" in kinds
    assert_serves_a_call(server)
    assert worker_pid(server) == pid


def in_progress(server: Server) -> int:
    with make_sessions(make_engine(server.db_url))() as session:
        return (
            session.scalar(
                select(func.count()).select_from(Call).where(Call.status == "in_progress")
            )
            or 0
        )


def invite(port: int) -> tuple[int, str]:
    """One raw INVITE; the final status code and reason. ACKs a negative final response."""
    call_id, branch, tag = uuid.uuid4().hex, "z9hG4bK" + uuid.uuid4().hex[:10], "t5"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
        sdp = (
            f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {free_port()} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        head = (
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch}\r\n"
            f"From: <sip:{KNOWN}@127.0.0.1:{local}>;tag={tag}\r\n"
            f"To: <sip:ivr@127.0.0.1:{port}>\r\nCall-ID: {call_id}\r\n"
        )
        s.sendto(
            (
                f"INVITE sip:ivr@127.0.0.1:{port} SIP/2.0\r\n{head}CSeq: 1 INVITE\r\n"
                f"Contact: <sip:{KNOWN}@127.0.0.1:{local}>\r\nMax-Forwards: 70\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
            ).encode(),
            ("127.0.0.1", port),
        )
        s.settimeout(5)
        while True:
            data = s.recv(65535).decode(errors="replace")
            status = data.split("\r\n", 1)[0].split(" ", 2)
            code = int(status[1])
            if code >= 200:
                break
        to = next(line for line in data.split("\r\n") if line.lower().startswith("to:"))
        if code >= 300:
            s.sendto(
                (
                    f"ACK sip:ivr@127.0.0.1:{port} SIP/2.0\r\n"
                    + head.replace(next(h for h in head.split("\r\n") if h.startswith("To:")), to)
                    + "CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                ("127.0.0.1", port),
            )
        return code, status[2]


def test_fifth_simultaneous_call_is_refused_cleanly(server: Server) -> None:
    pid = worker_pid(server)
    ua = subprocess.Popen(
        ua_command(
            server, "audio;wait:6;hangup", caller=KNOWN, calls=4, timeout=40, rtp_port=33000
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(lambda: in_progress(server) == 4, timeout=15), in_progress(server)
        code, reason = invite(server.sip_port)
        assert code in (486, 503), (code, reason)
        out, err = ua.communicate(timeout=60)
    finally:
        if ua.poll() is None:
            ua.kill()
    assert ua.returncode == 0, err.decode()[-2000:]
    reports = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert len(reports) == 4 and all('"code": 200' in r for r in reports), reports
    time.sleep(0.5)
    assert_serves_a_call(server)
    assert worker_pid(server) == pid
