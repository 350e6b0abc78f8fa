"""The HTTP API of a real `voice serve`, with tokens from a real `voice users add`.

A customer calls; their collector reads the call's note through the API and adds one of their
own; another collector's account stays invisible; compliance sees each of those accesses in
the audit log; a user disabled on the command line is refused at once by the running server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest import (
    REPO,
    Server,
    last_call_id,
    run_ua,
    start_server,
    stop_server,
    wait_for,
)

KNOWN = "+12125550101"  # demo account 10042, Dana Whitfield's (accounts/demo.py)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("voice-api"))
    try:
        yield srv
    finally:
        stop_server(srv)


def voice_users(server: Server, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "voice", "users", *args],
        env={**os.environ, "VOICE_DATA_DIR": str(server.data_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def token_of(stdout: str) -> str:
    return stdout.split("token: ", 1)[1].split()[0]


def api(server: Server, method: str, path: str, token: str | None, **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"http://127.0.0.1:{server.http_port}{path}"
    return httpx.request(method, url, headers=headers, timeout=10, **kw)  # type: ignore[arg-type]


def test_collector_and_compliance_through_the_running_server(server: Server) -> None:
    dana = token_of(voice_users(server, "add", "dana", "--role", "collector",
                                "--collector", "Dana Whitfield"))  # fmt: skip
    cora = token_of(voice_users(server, "add", "cora", "--role", "compliance"))

    # A customer calls and asks for the balance; the IVR leaves a note on 10042.
    [report] = run_ua(server, "audio;dtmf:1;wait:3;hangup", caller=KNOWN)
    assert report["code"] == 200 and not report["error"], report
    call_id = last_call_id(server, KNOWN)

    def call_note() -> dict[str, object] | None:
        notes = api(server, "GET", "/api/accounts/10042/notes", dana).json()["notes"]
        return next((n for n in notes if n["call_id"] == call_id), None)

    note = wait_for(call_note, timeout=15)
    assert note, "the call's note never showed up in the API"
    assert f"Inbound IVR call from {KNOWN}" in note["body"]  # type: ignore[index]

    written = api(server, "POST", "/api/accounts/10042/notes", dana,
                  json={"body": "Customer will pay INV-1001 on Friday."})  # fmt: skip
    assert written.status_code == 201, written.text
    assert written.json()["author"] == "dana"
    assert api(server, "GET", "/api/accounts/20001/notes", dana).status_code == 404
    assert api(server, "GET", "/api/audit", dana).status_code == 403
    assert api(server, "POST", "/api/accounts/10042/notes", cora,
               json={"body": "compliance may not write"}).status_code == 403  # fmt: skip
    refused = api(server, "GET", "/api/accounts/10042/notes", None)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")

    log = api(server, "GET", "/api/audit?user=dana", cora).json()["entries"]
    actions = [e["action"] for e in log]
    assert set(actions[:-3]) == {"notes.list"}  # polling for the call's note
    # The note, then 20001 (Marcus Lee's account) and the audit log refused.
    assert actions[-3:] == ["note.create", "access.denied", "access.denied"]
    assert [e["target_id"] for e in log[-2:]] == ["20001", "GET /api/audit"]
    assert {e["client_addr"] for e in log} == {"127.0.0.1"}

    # Disabled on the command line: refused by the running server from the next request.
    voice_users(server, "disable", "dana")
    assert api(server, "GET", "/api/accounts/10042/notes", dana).status_code == 401

    spec = api(server, "GET", "/api/openapi.json", None).json()
    assert "/api/audit" in spec["paths"] and "/api/notes/{note_id}" in spec["paths"]
    assert api(server, "GET", "/healthz", None).json()["status"] == "ok"
