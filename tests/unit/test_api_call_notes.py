"""A call's note over the API carries the call: parties, times, actions, recording, transcript,
and a transcript finished after the note was written shows up as soon as it exists."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accounts.call_journal import CallJournal
from accounts.models import Account, Recording, Transcript
from tests.unit.apiworld import World, make_world


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    w = make_world(database_url)
    yield w
    w.engine.dispose()


def test_call_note_carries_the_call_and_picks_up_a_late_transcript(world: World) -> None:
    journal = CallJournal(world.sessions)
    call_id = journal.start_call(
        direction="inbound", caller="+12125550101", callee="ivr", worker="w0", sip_call_id="x1"
    )
    journal.answered(call_id)
    with world.sessions() as session:
        account_id = session.query(Account.id).filter(Account.number == "10042").scalar()
    journal.set_account(call_id, account_id)
    journal.add_event(call_id, "identified", {"account": "10042", "how": "caller ID"})
    journal.add_event(call_id, "prompt", {"tokens": ["menu"]})  # not an action
    journal.add_event(call_id, "choice", {"key": "1", "option": "balance"})
    with world.sessions.begin() as session:
        rec = Recording(
            call_id=call_id,
            path="2026/11/22/call-1-rec-1.flac",
            sample_rate=16000,
            status="final",
            duration_s=12.5,
            sha256="ab" * 32,
            pauses=[{"start": 3, "end": 5}],
        )
        session.add(rec)
        session.flush()
        rec_id = rec.id
    note_id = journal.finish_call(
        call_id, status="completed", end_reason="caller hung up", summary="IVR call."
    )

    note = world.request("GET", f"/api/notes/{note_id}", "collector").json()
    call = note["call"]
    assert (call["direction"], call["caller"], call["status"]) == (
        "inbound",
        "+12125550101",
        "completed",
    )
    assert call["answered_at"] and call["ended_at"]
    assert [(a["kind"], a.get("option")) for a in call["actions"]] == [
        ("identified", None),
        ("choice", "balance"),
    ]
    [recording] = call["recordings"]
    assert recording["id"] == rec_id and recording["url"] == f"/api/recordings/{rec_id}/audio"
    assert recording["sha256"] == "ab" * 32 and recording["pauses"] == [{"start": 3, "end": 5}]
    assert call["transcript"] == []

    with world.sessions.begin() as session:  # the recogniser finishes after the hang-up
        session.add(Transcript(call_id=call_id, speaker="caller", text="balance please"))
    listed = world.request("GET", "/api/accounts/10042/notes", "supervisor").json()
    [late] = [n for n in listed["notes"] if n["id"] == note_id]
    assert late["call"]["transcript"][0]["text"] == "balance please"


def test_a_manual_note_has_no_call(world: World) -> None:
    made = world.request(
        "POST", "/api/accounts/10042/notes", "collector", json={"body": "Left a message."}
    )
    assert made.status_code == 201
    note = world.request("GET", f"/api/notes/{made.json()['id']}", "collector").json()
    assert "call" not in note
