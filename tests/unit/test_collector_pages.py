"""The collectors' pages on SQLite and PostgreSQL: /today, Make a Call, the live call page,
outcomes, PCI pause, /accounts/{number} with notes, /voicemails; access rules, CSRF and
form errors. The fleet is apiworld's FakeFleet (the real one: tests/integration)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from accounts.models import Account, AuditEntry, Call, CallOutcome, Collector, Note, Recording
from tests.unit.pagesworld import PagesWorld, make_pages_world

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def w(database_url: str) -> Iterator[PagesWorld]:
    world = make_pages_world(database_url)
    # Within calling hours, on the demo's day: its due dates count from the machine's date
    # (accounts/demo.py), which is New York's next day from 19:00 to midnight there.
    noon = dt.datetime.combine(dt.date.today(), dt.time(12), NEW_YORK)
    world.state.clock = lambda: noon
    with world.sessions.begin() as session:  # the demo's example.com URIs are never dialled
        dana = session.scalar(select(Collector).where(Collector.name == "Dana Whitfield"))
        assert dana is not None
        dana.sip_uri = "sip:dana@127.0.0.1:5099"
    yield world
    world.world.engine.dispose()


def _accounts(html: str) -> list[str]:
    return re.findall(r'<tr data-account="([^"]+)"', html)


def _count(w: PagesWorld, model: type, **where: object) -> int:
    with w.sessions() as session:
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        return session.scalar(stmt) or 0


def _audit(w: PagesWorld, action: str) -> list[AuditEntry]:
    with w.sessions() as session:
        stmt = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
        return list(session.scalars(stmt))


def _call(w: PagesWorld, side: str) -> str:
    return w.world.targets[side]["call_id"]


# -- /today -------------------------------------------------------------------------------


def test_today_lists_only_the_collectors_accounts(w: PagesWorld) -> None:
    r = w.browser("dana").get("/today")
    assert r.status_code == 200
    assert _accounts(r.text) == ["10042"]
    assert "Northwind Traders" in r.text and "Fabrikam" not in r.text
    assert "1,250.00 USD" in r.text and "60 days past due" in r.text
    assert 'action="/calls"' in r.text and "may be called now" in r.text
    [read] = _audit(w, "worklist.read")
    assert read.detail["accounts"] == ["10042"]


def test_supervisors_see_all_or_choose_a_collector(w: PagesWorld) -> None:
    sam = w.browser("sam")
    assert _accounts(sam.get("/today").text) == ["30003", "10042", "20001", "20002"]
    with w.sessions() as session:
        marcus = session.scalar(select(Collector.id).where(Collector.name == "Marcus Lee"))
    r = sam.get(f"/today?collector={marcus}")
    assert _accounts(r.text) == ["20001", "20002"]
    assert 'action="/calls"' not in r.text  # only collectors place calls (their phone rings)
    assert f'<option value="{marcus}" selected>' in r.text


def test_a_collector_cannot_pick_another_collector(w: PagesWorld) -> None:
    with w.sessions() as session:
        marcus = session.scalar(select(Collector.id).where(Collector.name == "Marcus Lee"))
    assert _accounts(w.browser("dana").get(f"/today?collector={marcus}").text) == ["10042"]


def test_today_shows_why_a_contact_may_not_be_called(w: PagesWorld) -> None:
    night = dt.datetime.now(NEW_YORK).replace(hour=22, minute=0)
    w.state.clock = lambda: night
    r = w.browser("dana").get("/today")
    assert 'data-rule="calling_hours"' in r.text
    assert "outside calling hours 08:00-21:00 America/New_York" in r.text
    assert 'action="/calls"' not in r.text


def test_promise_due_comes_first_and_the_list_is_paged(w: PagesWorld) -> None:
    today = w.state.clock().date()
    with w.sessions.begin() as session:
        account = session.scalar(select(Account).where(Account.number == "20002"))
        assert account is not None
        call = Call(
            direction="outbound", caller="sip:m", callee="+12125550102", account_id=account.id,
            worker="w0", sip_call_id="p", status="completed",
            started_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=9),
        )  # fmt: skip
        session.add(call)
        session.flush()
        session.add(
            CallOutcome(
                call_id=call.id, account_id=account.id, collector_id=account.collector_id,
                user="marcus", kind="promise_to_pay", amount_cents=32000, currency="USD",
                promise_date=today - dt.timedelta(days=1),
            )
        )  # fmt: skip
    r = w.browser("sam").get("/today")
    assert _accounts(r.text)[0] == "20002"
    assert "Promise broken" in r.text and "320.00 USD" in r.text
    from voice.pages import today as today_page

    size, today_page.PAGE_SIZE = today_page.PAGE_SIZE, 3
    try:
        sam = w.browser("sam")
        first, second = sam.get("/today"), sam.get("/today?collector=all&page=2")
    finally:
        today_page.PAGE_SIZE = size
    assert _accounts(first.text) == ["20002", "30003", "10042"]
    assert _accounts(second.text) == ["20001"]
    assert "Page 2 of 2" in second.text and 'rel="prev"' in second.text


def test_compliance_may_not_open_today_and_it_is_audited(w: PagesWorld) -> None:
    r = w.browser("cora").get("/today")
    assert r.status_code == 403
    assert "role compliance may not GET /today" in r.text
    [denied] = [e for e in _audit(w, "access.denied") if e.user_name == "cora"]
    assert denied.target_id == "GET /today"


# -- Make a Call and the live call ----------------------------------------------------------


def test_make_a_call_uses_the_api_service_and_opens_the_call(w: PagesWorld) -> None:
    dana = w.browser("dana")
    r = dana.submit("/today", "/calls", {"account": "10042", "to": "+12125550101"})
    assert (r.status_code, r.headers["location"]) == (303, "/calls/901")
    [placed] = w.fleet.placed
    assert placed["customer"] == "+12125550101" and placed["user"] == "dana"
    assert len(_audit(w, "call.place")) == 1


def test_make_a_call_refused_by_a_guardrail_says_why(w: PagesWorld) -> None:
    night = dt.datetime.now(NEW_YORK).replace(hour=22, minute=0)
    w.state.clock = lambda: night  # (moving the clock later would expire the session)
    dana = w.browser("dana")
    token = dana.csrf("/today")
    r = dana.post("/calls", {"csrf": token, "account": "10042", "to": "+12125550101"})
    assert r.status_code == 409
    assert "outside calling hours" in r.text and "allowed from" in r.text
    assert w.fleet.placed == []


def test_make_a_call_for_another_collectors_account_is_404(w: PagesWorld) -> None:
    r = w.browser("dana").submit("/today", "/calls", {"account": "20001"})
    assert r.status_code == 404
    assert w.fleet.placed == []


def test_make_a_call_without_csrf_is_403_and_dials_nothing(w: PagesWorld) -> None:
    dana = w.browser("dana")
    dana.get("/today")
    r = dana.post("/calls", {"csrf": "forged", "account": "10042"})
    assert r.status_code == 403
    r = dana.post("/calls", {"account": "10042"})
    assert r.status_code == 403
    assert w.fleet.placed == []
    assert len([e for e in _audit(w, "access.denied") if e.target_type == "page"]) == 2


def test_live_call_page_shows_progress_transcript_and_controls(w: PagesWorld) -> None:
    call = _call(w, "own")
    r = w.browser("dana").get(f"/calls/{call}")
    assert r.status_code == 200
    assert 'data-live="yes"' in r.text and "in progress" in r.text
    assert "마지막" in r.text  # the fleet's partial words
    assert f'action="/calls/{call}/pause"' in r.text and 'id="save-outcome"' in r.text
    assert [e.action for e in _audit(w, "call.read")] == ["call.read"]
    assert len(_audit(w, "transcript.read")) == 1


def test_another_collectors_call_is_404(w: PagesWorld) -> None:
    other = _call(w, "other")
    dana = w.browser("dana")
    assert dana.get(f"/calls/{other}").status_code == 404
    assert dana.get(f"/calls/{other}/events").status_code == 404
    token = dana.csrf(f"/calls/{_call(w, 'own')}")
    r = dana.post(f"/calls/{other}/outcome", {"csrf": token, "kind": "reached"})
    assert r.status_code == 404
    assert _count(w, CallOutcome) == 0


def test_pause_and_resume_reach_the_fleet(w: PagesWorld) -> None:
    call = _call(w, "own")
    dana = w.browser("dana")
    assert dana.submit(f"/calls/{call}", f"/calls/{call}/pause", {}).status_code == 303
    assert dana.submit(f"/calls/{call}", f"/calls/{call}/resume", {}).status_code == 303
    assert w.fleet.asked == [(int(call), True), (int(call), False)]
    assert [e.action for e in _audit(w, "recording.pause")] == ["recording.pause"]


def test_outcome_form_errors_beside_fields_and_nothing_saved(w: PagesWorld) -> None:
    call = _call(w, "own")
    dana = w.browser("dana")
    data = {"kind": "promise_to_pay", "amount": "five hundred", "date": "next week", "text": ""}
    r = dana.submit(f"/calls/{call}", f"/calls/{call}/outcome", data)
    assert r.status_code == 422
    assert re.search(r'id="amount-error">[^<]*not an amount', r.text)
    assert re.search(r'id="date-error">[^<]*not a date', r.text)
    assert 'value="five hundred"' in r.text  # what was typed stays
    r = dana.submit(f"/calls/{call}", f"/calls/{call}/outcome", {"kind": ""})
    assert 'id="kind-error">Choose how the call ended.' in r.text
    assert _count(w, CallOutcome) == 0


def test_outcome_is_the_apis_outcome(w: PagesWorld) -> None:
    call = _call(w, "own")
    week = (w.state.clock().date() + dt.timedelta(days=7)).isoformat()
    data = {"kind": "promise_to_pay", "amount": "500.00", "date": week, "text": "by ACH"}
    r = w.browser("dana").submit(f"/calls/{call}", f"/calls/{call}/outcome", data)
    assert (r.status_code, r.headers["location"]) == (
        303,
        f"/calls/{call}?marked=promise_to_pay",
    )
    with w.sessions() as session:
        [outcome] = session.scalars(select(CallOutcome))
        note = session.get(Note, outcome.note_id)
    assert (outcome.kind, outcome.amount_cents, outcome.promise_date.isoformat()) == (
        "promise_to_pay",
        50000,
        week,
    )
    assert note is not None and note.kind == "outcome" and "500.00" in note.body
    assert len(_audit(w, "call.outcome")) == 1


def test_event_stream_of_an_ended_call(w: PagesWorld) -> None:
    call = _call(w, "own")
    with w.sessions.begin() as session:
        row = session.get(Call, int(call))
        assert row is not None
        row.status, row.ended_at = "completed", dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    r = w.browser("dana").get(f"/calls/{call}/events")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    names = re.findall(r"^event: (\w+)$", r.text, re.M)
    assert names == ["status", "transcript", "end"]
    assert '"status":"completed"' in r.text


# -- /accounts/{number} ---------------------------------------------------------------------


def test_account_page_has_what_is_needed_before_calling(w: PagesWorld) -> None:
    r = w.browser("dana").get("/accounts/10042")
    assert r.status_code == 200
    for text in ("Northwind Traders", "1,730.00 USD", "1,250.00 USD", "INV-1001", "CHK-5001"):
        assert text in r.text
    assert "INV-0999" not in r.text  # paid: not open
    assert "+12125550101" in r.text and "may be called now" in r.text
    assert "own note" in r.text
    assert len(_audit(w, "notes.list")) == 1


def test_another_collectors_account_is_404_and_audited(w: PagesWorld) -> None:
    r = w.browser("dana").get("/accounts/20001")
    assert r.status_code == 404
    assert "other note" not in r.text
    assert any(e.target_id == "20001" for e in _audit(w, "access.denied"))


def test_recording_plays_in_the_timeline_through_the_range_api(
    w: PagesWorld, tmp_path: object
) -> None:
    from tests.unit.apiworld import add_recording
    from voice.config import from_mapping

    w.state.cfg = from_mapping({"recordings": {"dir": str(tmp_path)}}, {})
    rid = add_recording(w.sessions, tmp_path, "10042")  # type: ignore[arg-type]
    with w.sessions.begin() as session:
        rec = session.get(Recording, rid)
        assert rec is not None
        session.add(Note(account_id=1, call_id=rec.call_id, author="ivr", kind="call", body="c"))
    dana = w.browser("dana")
    page = dana.get("/accounts/10042")
    assert f'<audio controls preload="metadata" src="/recordings/{rid}/audio"' in page.text
    r = dana.get(f"/recordings/{rid}/audio", headers={"Range": "bytes=0-3"})
    assert (r.status_code, r.content) == (206, b"fLaC")
    [played] = _audit(w, "recording.play")
    assert played.user_name == "dana" and played.detail["range"] == "bytes=0-3"
    assert w.browser("sam").get(f"/recordings/{rid}/audio").status_code == 200


def test_add_note_and_its_errors(w: PagesWorld) -> None:
    dana = w.browser("dana")
    r = dana.submit("/accounts/10042", "/accounts/10042/notes", {"body": "   "})
    assert r.status_code == 422
    assert 'id="body-error">The note must be non-empty text' in r.text
    before = _count(w, Note)
    r = dana.submit("/accounts/10042", "/accounts/10042/notes", {"body": "Left <b>word</b>"})
    assert r.status_code == 303 and r.headers["location"].startswith("/accounts/10042#note-")
    page = dana.get("/accounts/10042").text
    assert "Left &lt;b&gt;word&lt;/b&gt;" in page  # escaped, never markup
    assert _count(w, Note) == before + 1
    with w.sessions() as session:
        note = session.scalars(select(Note).order_by(Note.id.desc())).first()
    assert note is not None and (note.author, note.kind) == ("dana", "manual")


def test_add_note_with_a_bad_token_changes_nothing(w: PagesWorld) -> None:
    dana = w.browser("dana")
    dana.get("/accounts/10042")
    before = _count(w, Note)
    r = dana.post("/accounts/10042/notes", {"csrf": "x", "body": "sneaky"})
    assert r.status_code == 403
    assert _count(w, Note) == before


def test_compliance_reads_an_account_but_gets_no_note_form(w: PagesWorld) -> None:
    r = w.browser("cora").get("/accounts/20001")
    assert r.status_code == 200 and "other note" in r.text
    assert 'action="/accounts/20001/notes"' not in r.text


# -- /voicemails ----------------------------------------------------------------------------


def _voicemail(w: PagesWorld, number: str) -> int:
    with w.sessions.begin() as session:
        account_id = session.scalar(select(Account.id).where(Account.number == number))
        note = Note(account_id=account_id, author="ivr", kind="voicemail", body=f"vm {number}")
        session.add(note)
        session.flush()
        return note.id


def test_voicemails_handled_button_and_header_count(w: PagesWorld) -> None:
    mine, theirs = _voicemail(w, "10042"), _voicemail(w, "20001")
    dana = w.browser("dana")
    r = dana.get("/voicemails")
    assert "vm 10042" in r.text and "vm 20001" not in r.text
    assert 'id="unhandled" aria-label="1 unhandled">1<' in r.text
    assert 'id="unhandled"' in dana.get("/accounts/10042").text  # every page's header
    r = dana.submit("/voicemails", f"/voicemails/{mine}/handled", {})
    assert r.status_code == 303
    r = dana.get("/voicemails")
    assert "Handled by dana" in r.text and 'id="unhandled"' not in r.text
    assert len(_audit(w, "voicemail.handled")) == 1
    # another collector's voicemail cannot be marked; marking twice keeps the first
    assert dana.submit("/voicemails", f"/voicemails/{theirs}/handled", {}).status_code == 404
    sam = w.browser("sam")
    assert 'aria-label="1 unhandled"' in sam.get("/voicemails").text
    assert sam.submit("/voicemails", f"/voicemails/{mine}/handled", {}).status_code == 303
    assert "Handled by dana" in sam.get("/voicemails").text
