"""Raw SIP over UDP and TCP for tests that send what no user agent would (RFC 4475 messages).

`exchange(raw, "udp" | "tcp", (host, port), bind_via)` sends one message byte for byte and
returns the status codes that came back, and finishes what it started as a peer would: the ACK
of a failed INVITE (its own Via and branch), ACK and BYE along the Record-Route set for a 2xx,
CANCEL when no final answer came. Replies are taken wherever a server may send them: over UDP
on the port the message's Via names (`bind_via`; pjsip answers there without rport), and over
TCP on the connection and on a UDP socket of the same port (a Via that says UDP gets its answer
over UDP, at the rport).
"""

from __future__ import annotations

import re
import select
import socket
import time
import uuid
from dataclasses import dataclass, field

FIRST_WAIT = 1.0  # seconds for the first answer to a message
FINAL_WAIT = 8.0  # seconds for a final answer once a provisional one came
COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length",
           "m": "contact", "c": "content-type"}  # fmt: skip


@dataclass
class Message:
    """A SIP message split into start line, (unfolded) headers and body."""

    start: str
    headers: list[tuple[str, str]]
    body: bytes = b""

    def get(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def first(self, name: str) -> str:
        found = self.get(name)
        return found[0] if found else ""

    @property
    def status(self) -> int | None:
        m = re.match(r"SIP/2\.0 (\d{3})", self.start)
        return int(m.group(1)) if m else None


def parse(data: bytes) -> Message:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    unfolded: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += " " + line.strip()
        else:
            unfolded.append(line)
    headers = []
    for line in unfolded:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        headers.append((COMPACT.get(name, name), value.strip()))
    return Message(lines[0], headers, body)


def split_stream(buf: bytes) -> tuple[list[bytes], bytes]:
    """Whole messages at the front of a TCP stream (framed by Content-Length), and the rest."""
    out = []
    while True:
        buf = buf.lstrip(b"\r\n")
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out, buf
        length = parse(buf[: end + 4]).first("content-length")
        total = end + 4 + (int(length) if length.isdigit() else 0)
        if len(buf) < total:
            return out, buf
        out.append(buf[:total])
        buf = buf[total:]


class Link:
    """A peer's sockets to one target. UDP: one socket, bound where the message's Via says
    replies go when `via_port` is given (a worker answers there when the Via has no rport).
    TCP: one connection, and a UDP socket on the same port number, because a message whose Via
    says UDP gets its answer over UDP (Kamailio, with rport) even when it came over TCP."""

    def __init__(self, transport: str, target: tuple[str, int], via_port: int | None) -> None:
        self.transport, self.target, self.buf = transport, target, b""
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp: socket.socket | None = None
        try:
            self.udp.bind(("127.0.0.1", via_port or 0))
        except OSError:
            self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        if transport == "tcp":
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                self.tcp.settimeout(FIRST_WAIT)
                self.tcp.connect(target)
            except OSError:
                self.close()
                raise

    def send(self, data: bytes) -> None:
        if self.tcp is None:
            self.udp.sendto(data, self.target)
        else:
            self.tcp.sendall(data)

    def receive(self, timeout: float) -> list[tuple[Message, str]]:
        """What arrived within `timeout`: (message, "udp" | "tcp"); EOFError once TCP closed."""
        socks = [self.udp] + ([self.tcp] if self.tcp is not None else [])
        ready, _, _ = select.select(socks, [], [], max(timeout, 0.01))
        got: list[tuple[Message, str]] = []
        for sock in ready:
            if sock is self.udp:
                data, _ = self.udp.recvfrom(65535)
                got.append((parse(data), "udp"))
                continue
            try:
                chunk = sock.recv(65535)
            except ConnectionError:
                chunk = b""
            if not chunk:
                raise EOFError
            messages, self.buf = split_stream(self.buf + chunk)
            got += [(parse(m), "tcp") for m in messages]
        return got

    def close(self) -> None:
        self.udp.close()
        if self.tcp is not None:
            self.tcp.close()


@dataclass
class Answer:
    codes: list[int] = field(default_factory=list)  # every status received, in order
    over: list[str] = field(default_factory=list)  # the transport each came over
    closed: bool = False  # TCP: the server closed the connection
    teardown: list[str] = field(default_factory=list)  # what the lab did after, and got


def via_port(raw: bytes) -> int:
    via = parse(raw).first("via")
    m = re.search(r"[\w.\-\[\]]+\s*:\s*(\d+)", via.split(",")[0].split(";")[0])
    port = int(m.group(1)) if m else 5060
    return port if 1024 <= port <= 65535 else 5060


def exchange(raw: bytes, transport: str, target: tuple[str, int], bind_via: bool) -> Answer:
    """Send one torture message and take what comes back, finishing an INVITE it starts."""
    answer = Answer()
    try:
        link = Link(transport, target, via_port(raw) if bind_via else None)
    except OSError as exc:
        answer.teardown.append(f"connect failed: {exc}")
        return answer
    request = parse(raw)
    invite = request.start.startswith("INVITE ")
    try:
        link.send(raw)
        final = _collect(link, answer, FIRST_WAIT)
        if invite and answer.codes and final is None:
            link.send(_cancel(request, transport, link.port))
            answer.teardown.append("CANCEL")
            final = _collect(link, answer, FINAL_WAIT, until_final_of="INVITE")
        if invite and final is not None:
            _finish_invite(link, request, final, answer)
    except EOFError:
        answer.closed = True
    finally:
        link.close()
    return answer


def _collect(
    link: Link, answer: Answer, wait: float, until_final_of: str | None = None
) -> Message | None:
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        for reply, over in link.receive(left):
            code = reply.status
            if code is None:
                continue
            method = reply.first("cseq").split()[-1:] or [""]
            if until_final_of and method[0] != until_final_of:
                answer.teardown.append(f"{method[0]} {code}")
                continue
            answer.codes.append(code)
            answer.over.append(over)
            if code >= 200:
                return reply
            deadline = max(deadline, time.monotonic() + FINAL_WAIT)
    return None


def _finish_invite(link: Link, request: Message, final: Message, answer: Answer) -> None:
    code = final.status or 0
    if code >= 300:  # a failure's ACK is hop-by-hop: the INVITE's own Via and branch
        top = final.first("via").split(",")[0]
        link.send(_ack(final, request.start.split()[1], [top], []))
        answer.teardown.append("ACK")
        return
    contact = re.search(r"<([^>]+)>", final.first("contact"))
    target = contact.group(1) if contact else final.first("contact")
    # A UAC's route set is the Record-Route list reversed (RFC 3261 12.1.2).
    routes = list(reversed([r for rr in final.get("record-route") for r in rr.split(",")]))
    via = _via(link.transport, link.port)
    link.send(_ack(final, target, [via], routes))
    bye = _request("BYE", final, target, [_via(link.transport, link.port)], routes, +1)
    link.send(bye)
    got = None
    deadline = time.monotonic() + FINAL_WAIT
    while got is None and (left := deadline - time.monotonic()) > 0:
        for reply, _ in link.receive(left):
            if reply.first("cseq").endswith("BYE") and (reply.status or 0) >= 200:
                got = reply.status
    answer.teardown.append(f"ACK, BYE {got}")


def _via(transport: str, port: int) -> str:
    return f"SIP/2.0/{transport.upper()} 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex};rport"


def _ack(final: Message, uri: str, vias: list[str], routes: list[str]) -> bytes:
    return _request("ACK", final, uri, vias, routes, 0)


def _request(
    method: str, final: Message, uri: str, vias: list[str], routes: list[str], step: int
) -> bytes:
    number = int(final.first("cseq").split()[0]) + step
    lines = [f"{method} {uri} SIP/2.0"]
    lines += [f"Via: {v}" for v in vias]
    lines += [f"Route: {r.strip()}" for r in routes if r.strip()]
    lines += [
        f"From: {final.first('from')}",
        f"To: {final.first('to')}",
        f"Call-ID: {final.first('call-id')}",
        f"CSeq: {number} {method}",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _cancel(request: Message, transport: str, port: int) -> bytes:
    number = request.first("cseq").split()[0]
    lines = [
        f"CANCEL {request.start.split()[1]} SIP/2.0",
        f"Via: {request.first('via').split(',')[0]}",
        f"From: {request.first('from')}",
        f"To: {request.first('to')}",
        f"Call-ID: {request.first('call-id')}",
        f"CSeq: {number} CANCEL",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
