"""RFC 4475 torture messages against the fleet while a call is up: nothing restarts, the call
completes with its note, and every message gets the answer measured for it.

The 49 messages of ../shared/rfc4475/ (and its control `test.dat`) name hosts under example.com
and media in 192.0.2.0/24, so the server and the sender run in a network namespace of their own
with only loopback (`unshare -n`): nothing they answer can leave the machine. This module is
also the lab that runs in there (`python -m tests.integration.test_torture OUT`): it starts
`voice serve` (Kamailio and two workers), places a call from the scripted UA, sends each message
over UDP and over TCP to Kamailio's port and to a worker's (which listens on UDP only), one at a
time, and writes what came back to OUT/answers.json. An INVITE that was answered is finished as
a peer would (tests/integration/rawsip.py), so the fleet holds no half-open calls.

What each message gets is in ANSWERS, measured here and checked against RFC 4475's own
classification (section 3.1.1 valid and 3.1.2 invalid syntax, 3.2 transaction, 3.3
application-layer semantics, 3.4 RFC 2543 compatibility). Kamailio drops a message its parser
or `sanity_check` rejects without answering; which ones, and why, is in the README's "SIP
torture" section.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.rawsip import exchange

REPO = Path(__file__).resolve().parents[2]
# The messages are provided beside the checkout (../shared), not in it; a clone elsewhere names
# them with VOICE_TEST_RFC4475, else the machine's copy in /work/shared is used.
MESSAGES = next(
    (
        path
        for path in (
            Path(os.environ.get("VOICE_TEST_RFC4475", REPO.parent / "shared" / "rfc4475")),
            REPO.parent / "shared" / "rfc4475",
            Path("/work/shared/rfc4475"),
        )
        if (path / "sdp01.dat").is_file()
    ),
    REPO.parent / "shared" / "rfc4475",
)
KNOWN = "+12125550101"  # demo account 10042: the live call is filed on it
# The live call: the balance, then the key again every 12 s (the IVR ends a call after three
# menus with no key) while the messages go out, then the caller hangs up.
CALL_STEPS = "audio;dtmf:1;audio" + ";wait:12;dtmf:1;audio" * 9 + ";wait:2;hangup"
# Made here from the folder's messages: (base, bytes replaced, by). An Accept that names SDP in
# another case among other types: the 406 for sdp01 must not refuse it.
VARIANTS = {
    "sdp01-sdp-ok": (
        "sdp01",
        b"Accept: text/nobodyKnowsThis",
        b"Accept: text/plain, Application/SDP;q=0.5",
    ),
}
# pjsip keys an INVITE server transaction by branch alone and keeps it Confirmed for Timer I
# (T4, 5 s over UDP) after the ACK of a failure. A request that arrives meanwhile with the same
# branch and CSeq method INVITE but another method in its request line (mismatch01.dat, after
# invut.dat: RFC 4475 reuses branch z9hG4bKkdjuw) reaches that transaction and fails an
# assertion in sip_transaction.c (tsx_on_state_confirmed): the worker aborts (signal 6).
# Kamailio refuses the mismatch (sanity_check, 400) and puts its own branch on what it forwards,
# so only a sender on the workers' loopback ports gets there. The main run waits out Timer I
# after a failed INVITE; the probe does not (test_a_worker_survives_a_request_posing_as_its_ack).
PROBE = ("invut", "mismatch01")
TIMER_I = 5.5


# -- the lab (runs inside the namespace) -----------------------------------------------------


def messages() -> dict[str, bytes]:
    """Every message of the folder by name, and VARIANTS made from them."""
    found = {p.stem: p.read_bytes() for p in sorted(MESSAGES.glob("*.dat"))}
    for name, (base, old, new) in VARIANTS.items():
        found[name] = found[base].replace(old, new).replace(b"Call-ID: ", b"Call-ID: v-")
    return found


def send_all(
    raw: dict[str, bytes], port: int, bind_via: bool, log: Path | None
) -> dict[str, dict[str, Any]]:
    """Each message over UDP, then over TCP, to 127.0.0.1:`port`, one at a time."""
    answers: dict[str, dict[str, Any]] = {}
    for transport in ("udp", "tcp"):
        for name, data in raw.items():
            mark = log.stat().st_size if log else 0
            got = exchange(data, transport, ("127.0.0.1", port), bind_via)
            if bind_via and data.startswith(b"INVITE ") and any(c >= 300 for c in got.codes):
                time.sleep(TIMER_I)  # see PROBE: the next message may reuse its branch
            logged = log.read_bytes()[mark:].decode(errors="replace") if log else ""
            answers.setdefault(name, {})[transport] = {
                "codes": got.codes,
                "over": got.over,
                "closed": got.closed,
                "teardown": got.teardown,
                "log": [line for line in logged.splitlines() if line.strip()][:6],
            }
    return answers


def loopback_only() -> None:
    """Bring up lo, and refuse to go on outside a namespace with nothing but lo."""
    interfaces = sorted(name for _, name in socket.if_nameindex())  # this namespace's own
    if interfaces != ["lo"]:
        raise SystemExit(f"not in a loopback-only network namespace (interfaces {interfaces})")
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, request))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def probe(raw: dict[str, bytes], port: int) -> dict[str, Any]:
    """PROBE: a failed INVITE, then within Timer I a request reusing its branch with CSeq
    method INVITE, straight to a worker."""
    answers = {}
    for name in PROBE:
        got = exchange(raw[name], "udp", ("127.0.0.1", port), True)
        answers[name] = {"codes": got.codes, "teardown": got.teardown}
    return answers


def lab(out: Path) -> None:
    """Inside the namespace: fleet, live call, every message three ways, answers.json."""
    loopback_only()
    from sqlalchemy import select

    from accounts.models import Call, Note
    from tests.integration.conftest import (
        free_port_block,
        last_call_id,
        start_server,
        start_ua,
        stop_server,
        wait_for,
    )

    env = {
        "VOICE_WORKERS_COUNT": "2",
        "VOICE_WORKERS_SIP_PORT": str(free_port_block(2)),
        "VOICE_SIP_MAX_SETUPS_PER_SECOND": "50",  # torture INVITEs come fast: never 503 them
    }
    server = start_server(out / "data", env)
    result: dict[str, Any] = {}
    try:
        health = server.health()
        result["before"] = _processes(health)
        ua_log = out / "ua.log"
        ua = start_ua(server, CALL_STEPS, ua_log, caller=KNOWN, timeout=400)
        assert wait_for(lambda: server.health()["capacity"]["calls"] >= 1, 20), "no live call"
        kam_log = server.data_dir / "run" / "kamailio" / "kamailio.log"
        raw = messages()
        started = time.monotonic()
        # One message at a time: the same message on two paths at once would reach one worker
        # twice (a merged request, 482) and make the answers depend on timing.
        result["kamailio"] = send_all(raw, server.sip_port, False, kam_log)
        result["worker"] = send_all(raw, health["workers"][0]["sip_port"], True, None)
        result["seconds_sending"] = round(time.monotonic() - started, 1)
        result["call_up_after"] = ua.poll() is None
        result["after"] = _processes(server.health())
        ua.wait(420)
        call_id = last_call_id(server, KNOWN)
        done = wait_for(lambda: _finished(server, call_id), 30)
        with server.session() as session:
            call = session.get(Call, call_id)
            note = session.scalar(select(Note.body).where(Note.call_id == call_id))
            result["call"] = {
                "id": call_id,
                "status": call.status if call else None,
                "end_reason": call.end_reason if call else None,
                "note": note,
                "finished": bool(done),
                "ua": [ln for ln in ua_log.read_text(errors="replace").splitlines() if "{" in ln],
            }
        result["final"] = _processes(server.health())
        result["probe"] = probe(raw, health["workers"][1]["sip_port"])
        time.sleep(2)  # an aborted worker is seen dead within this
        result["probed"] = _processes(server.health())
    finally:
        (out / "answers.json").write_text(json.dumps(result, indent=1))
        stop_server(server)


def _processes(health: dict[str, Any]) -> dict[str, Any]:
    return {
        "workers": {w["name"]: [w["pid"], w["restarts"], w["alive"]] for w in health["workers"]},
        "kamailio": [health["kamailio"]["pid"], health["kamailio"]["alive"]],
    }


def _finished(server: Any, call_id: int) -> bool:
    from accounts.models import Call

    with server.session() as session:
        call = session.get(Call, call_id)
        return call is not None and call.status != "in_progress"


# -- the tests (outside the namespace) -------------------------------------------------------

VALID, INVALID, RESPONSE = "valid", "invalid", "response"  # RFC 4475's verdict on a message
# name: (RFC 4475 section, verdict, Kamailio over UDP, Kamailio over TCP, a worker over UDP):
# the final status each got (None: no answer). Measured 2026-12-03 (Kamailio 5.6.3, pjsip
# 2.15.1). Kamailio answers INVITEs from a trunk (here: 127.0.0.1) by handing them to a worker
# (200: the IVR answered; the lab then ACKs and BYEs), REGISTERs with a digest challenge (401)
# before reading their contacts, and other requests not for itself with 403 (policy, not
# syntax). None from Kamailio: its parser or sanity_check dropped the message (the README's
# "SIP torture" section says which and why). Workers take UDP from Kamailio only: over TCP
# nothing listens; pjsua drops requests no module handles (REGISTER, unknown methods).
ANSWERS: dict[str, tuple[str, str, int | None, int | None, int | None]] = {
    "wsinv": ("3.1.1.1", VALID, None, None, 481),  # Kamailio: CSeq folded over two lines
    "intmeth": ("3.1.1.2", VALID, None, None, None),  # Kamailio: header name with ! % ` ' ~
    "esc01": ("3.1.1.3", VALID, 200, 200, 200),
    "escnull": ("3.1.1.4", VALID, 401, 401, None),
    "esc02": ("3.1.1.5", VALID, None, None, None),  # Kamailio: header name C%6Fntact
    "lwsdisp": ("3.1.1.6", VALID, 403, 403, 200),
    "longreq": ("3.1.1.7", VALID, 200, 200, 200),
    "dblreq": ("3.1.1.8", VALID, 400, 401, None),  # UDP: sanity_check counts the trailing octets
    "semiuri": ("3.1.1.9", VALID, 403, 403, 200),
    "transports": ("3.1.1.10", VALID, 403, 403, 200),
    "mpart01": ("3.1.1.11", VALID, 403, 403, 200),
    "unreason": ("3.1.1.12", RESPONSE, None, None, None),
    "noreason": ("3.1.1.13", RESPONSE, None, None, None),
    "badinv01": ("3.1.2.1", INVALID, None, None, None),
    "clerr": ("3.1.2.2", INVALID, 400, None, 200),  # TCP: waits for the 9999 octets promised
    "ncl": ("3.1.2.3", INVALID, None, None, None),
    "scalar02": ("3.1.2.4", INVALID, 400, 400, None),
    "scalarlg": ("3.1.2.5", RESPONSE, None, None, None),
    "quotbal": ("3.1.2.6", INVALID, None, None, None),
    "ltgtruri": ("3.1.2.7", INVALID, 400, 400, None),
    "lwsruri": ("3.1.2.8", INVALID, None, None, None),
    "lwsstart": ("3.1.2.9", INVALID, None, None, 200),
    "trws": ("3.1.2.10", INVALID, 403, 403, 200),
    "escruri": ("3.1.2.11", INVALID, 200, 200, 200),  # RFC: may be accepted, escapes ignored
    "baddate": ("3.1.2.12", INVALID, 200, 200, 200),  # RFC: process it, ignore the Date
    "regbadct": ("3.1.2.13", INVALID, 401, 401, None),
    "badaspec": ("3.1.2.14", INVALID, 403, 403, 200),
    "baddn": ("3.1.2.15", INVALID, 400, None, 200),
    "badvers": ("3.1.2.16", INVALID, None, None, None),
    "mismatch01": ("3.1.2.17", INVALID, 400, 400, 200),
    "mismatch02": ("3.1.2.18", INVALID, 400, 400, None),
    "bigcode": ("3.1.2.19", RESPONSE, None, None, None),
    "badbranch": ("3.2.1", VALID, 403, 403, 200),
    "insuf": ("3.3.1", INVALID, None, None, None),
    "unkscm": ("3.3.2", INVALID, 400, 400, None),
    "novelsc": ("3.3.3", INVALID, 400, 400, None),
    "unksm2": ("3.3.4", VALID, 400, 400, None),  # sanity_check cannot parse the To/From URIs
    "bext01": ("3.3.5", INVALID, 403, 403, 200),
    "invut": ("3.3.6", INVALID, 415, 415, 415),
    "regaut01": ("3.3.7", VALID, 401, 401, None),
    "multi01": ("3.3.8", INVALID, None, None, 200),
    "mcl01": ("3.3.9", INVALID, None, None, 200),
    "bcast": ("3.3.10", RESPONSE, None, None, None),
    "zeromf": ("3.3.11", VALID, 483, 483, 200),  # a proxy: 483; a UAS: processes it
    "cparam01": ("3.3.12", VALID, 401, 401, None),
    "cparam02": ("3.3.13", VALID, 401, 401, None),
    "regescrt": ("3.3.14", VALID, 401, 401, None),
    "sdp01": ("3.3.15", INVALID, 406, 406, 200),  # Accept excludes SDP: Kamailio's 406
    "inv2543": ("3.4.1", VALID, 400, None, 400),  # the worker refuses RFC 2543's Via
    "test": ("folder", INVALID, None, None, None),  # the folder's "control": no SIP version, no Via
    "sdp01-sdp-ok": ("variant", VALID, 200, 200, 200),  # Accept: Application/SDP among others
}
# Invalid messages RFC 4475 says may be processed anyway: the only 2xx Kamailio may give one.
LENIENT = {"escruri", "baddate"}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path("/usr/sbin/kamailio").exists() and not os.environ.get("CI"),
        reason="Kamailio is not installed (make test installs it)",
    ),
]


def final(answer: dict[str, Any]) -> int | None:
    return next((c for c in answer["codes"] if c >= 200), None)


@pytest.fixture(scope="module")
def torture(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The lab's answers.json, from one run in a new loopback-only network namespace."""
    unshare = shutil.which("unshare")
    reason = None if unshare else "unshare (util-linux) is not installed"
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode:
        reason = "unshare -n cannot create a network namespace here (needs root or userns)"
    if reason:
        print(f"RFC 4475 torture skipped: {reason}")
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("torture")
    cmd = [unshare, "-n", "--", sys.executable, "-m", "tests.integration.test_torture", str(out)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=600)
    report = out / "answers.json"
    assert done.returncode == 0 and report.exists(), done.stderr.decode()[-3000:]
    result: dict[str, Any] = json.loads(report.read_text())
    print(f"torture: {result['seconds_sending']} s of sending; probe: {result['probe']}, "
          f"processes {result['final']} -> {result['probed']}")  # fmt: skip
    return result


def test_every_message_gets_its_answer_and_nothing_restarts(torture: dict[str, Any]) -> None:
    assert torture["call_up_after"], "the live call ended before every message was sent"
    assert torture["after"] == torture["before"], "a process restarted during the torture"
    assert torture["final"] == torture["before"], "a process restarted after the torture"
    assert set(torture["kamailio"]) == set(ANSWERS), "a message of the folder has no row"
    got = {
        name: (
            final(torture["kamailio"][name]["udp"]),
            final(torture["kamailio"][name]["tcp"]),
            final(torture["worker"][name]["udp"]),
        )
        for name in ANSWERS
    }
    wrong = {n: (ANSWERS[n][2:], got[n]) for n in ANSWERS if got[n] != ANSWERS[n][2:]}
    assert not wrong, f"(expected, got) as (Kamailio UDP, Kamailio TCP, worker UDP): {wrong}"
    for name, (_, verdict, *_answers) in ANSWERS.items():
        for transport in ("udp", "tcp"):
            code = got[name][0 if transport == "udp" else 1]
            if verdict == INVALID and name not in LENIENT:
                assert code is None or code >= 400, (name, transport, code)
            if verdict == RESPONSE:
                assert code is None, (name, transport, code)
        # Workers listen on UDP only (voice/fleet.py): over TCP the connection is refused.
        assert torture["worker"][name]["tcp"]["teardown"][0].startswith("connect failed")
    # The probe's first half, so the xfail below fails for its own reason only.
    assert (
        torture["probe"]["invut"]["codes"][-1] == 415
        and "ACK" in torture["probe"]["invut"]["teardown"]
    )


def test_every_answered_invite_was_hung_up(torture: dict[str, Any]) -> None:
    """An INVITE a worker answered got its ACK and BYE, and the BYE its 200: no call is left
    half open on the fleet by the torture."""
    invites = {name for name, data in messages().items() if data.startswith(b"INVITE ")}
    for path in ("kamailio", "worker"):
        for name in invites:
            for transport, answer in torture[path][name].items():
                if any(200 <= c < 300 for c in answer["codes"]):
                    assert "ACK, BYE 200" in answer["teardown"], (path, name, transport, answer)


def test_the_call_completes_with_its_note(torture: dict[str, Any]) -> None:
    call = torture["call"]
    assert call["finished"] and call["status"] == "completed", call
    assert call["end_reason"] == "caller hung up", call
    note = call["note"] or ""
    assert "Account 10042 identified by caller ID." in note, note
    assert note.count("balance: open") >= 5, note  # keys pressed all through the torture
    assert "Ended: caller hung up." in note and "FLAC, final" in note, note
    [report] = [json.loads(line) for line in call["ua"]]
    assert report["code"] == 200 and not report["error"], report


@pytest.mark.xfail(
    strict=True,
    reason="pjsip 2.15.1 asserts (tsx_on_state_confirmed) on a non-ACK request matching a "
    "Confirmed INVITE transaction by branch: see PROBE",
)
def test_a_worker_survives_a_request_posing_as_its_ack(torture: dict[str, Any]) -> None:
    assert torture["probed"] == torture["final"], "the worker aborted and was restarted"


if __name__ == "__main__":
    lab(Path(sys.argv[1]))
