"""The compliance pages over the real app (API + pages, real FLAC files, SQLite and PostgreSQL):
search with every filter, a bad value beside its field, CSV export, one recording with its
transcript and player, verify, legal hold, the audit log; access and audit exactly as the API."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from accounts.models import AuditEntry, Call, Recording, Transcript
from tests.unit.apiworld import add_recording
from tests.unit.pagesworld import PagesWorld, make_pages_world
from voice.config import from_mapping
from voice.pages.compliance import _cell


@pytest.fixture
def w(database_url: str, tmp_path: Path) -> Iterator[PagesWorld]:
    root = tmp_path / "recordings"
    cfg = from_mapping({"recordings": {"dir": str(root)}}, {})
    pw = make_pages_world(database_url, cfg)
    pw.root = root  # type: ignore[attr-defined]
    own = add_recording(pw.sessions, root, "10042")
    other = add_recording(pw.sessions, root, "20001")
    with pw.sessions.begin() as session:
        rec = session.get(Recording, own)
        assert rec is not None
        words = [
            {"word": "balance", "start": 0.1, "end": 0.2, "conf": 0.9},
            {"word": "please", "start": 0.25, "end": 0.4, "conf": 0.9},
        ]
        session.add(
            Transcript(
                call_id=rec.call_id,
                speaker="caller",
                text="balance please",
                start_s=0.1,
                end_s=0.4,
                words=words,
            )
        )
    pw.ids = {"own": own, "other": other}  # type: ignore[attr-defined]
    yield pw
    pw.world.engine.dispose()


def _actions(w: PagesWorld, after: int) -> list[tuple[str, str, str | None]]:
    with w.sessions() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.id > after))
        return [(r.action, r.user_name, r.target_id) for r in rows]


def _ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'href="/recordings/(\d+)"', html)]


def test_search_every_filter_a_bad_value_beside_its_field_and_csv(w: PagesWorld) -> None:
    own, other = w.ids["own"], w.ids["other"]  # type: ignore[attr-defined]
    cora = w.browser("cora")
    page = cora.get("/recordings")
    assert page.status_code == 200 and set(_ids(page.text)) == {own, other}
    assert _ids(cora.get("/recordings", params={"account": "10042"}).text) == [own]
    assert _ids(cora.get("/recordings", params={"q": "BALANCE"}).text) == [own]
    assert _ids(cora.get("/recordings", params={"collector": "Marcus Lee"}).text) == [other]
    assert _ids(cora.get("/recordings", params={"order": "oldest"}).text) == [own, other]
    everything = {"phone": "", "from": "2000-01-01", "to": "2100-01-01", "direction": "inbound"}
    assert set(_ids(cora.get("/recordings", params=everything).text)) == {own, other}
    bad = cora.get("/recordings", params={"phone": "12ab", "from": "yesterday", "account": "1"})
    assert bad.status_code == 422
    assert re.search(r'id="f-phone"[^>]*value="12ab"[^>]*aria-invalid="true"', bad.text)
    assert re.search(r'id="e-phone">invalid phone', bad.text)
    assert re.search(r'id="e-from">from must be ISO 8601', bad.text)
    assert 'id="e-account"' not in bad.text and 'id="results"' not in bad.text
    before = _last(w)
    export = cora.get("/recordings.csv", params={"account": "10042"})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [int(r["id"]) for r in rows] == [own] and rows[0]["customer"] == "Northwind Traders"
    assert _actions(w, before) == [("recordings.export", "cora", None)]


def _last(w: PagesWorld) -> int:
    with w.sessions() as session:
        return max(session.scalars(select(AuditEntry.id)), default=0)


def test_one_recording_page_audited_with_player_and_transcript(w: PagesWorld) -> None:
    own, other = w.ids["own"], w.ids["other"]  # type: ignore[attr-defined]
    with w.sessions.begin() as session:  # an utterance timed in another recording
        rec = session.get(Recording, own)
        assert rec is not None
        session.add(
            Transcript(call_id=rec.call_id, recording_id=other, speaker="agent", text="elsewhere")
        )
    dana = w.browser("dana")
    before = _last(w)
    page = dana.get(f"/recordings/{own}")
    assert page.status_code == 200
    assert f'<audio id="player" controls preload="metadata" src="/recordings/{own}/audio">' in (
        page.text
    )
    assert 'data-start="0.25" data-end="0.4">please</button>' in page.text
    assert "elsewhere" not in page.text
    assert ("recording.read", "dana", str(own)) in _actions(w, before)
    assert 'id="verify"' not in page.text and 'id="hold-button"' not in page.text  # not a keeper
    assert dana.get(f"/recordings/{own}/audio").content.startswith(b"fLaC")
    peaks = dana.get(f"/recordings/{own}/peaks").json()
    assert [lane["name"] for lane in peaks["lanes"]] == ["call"]
    for path in (f"/recordings/{other}", "/recordings/999999", "/recordings/abc"):
        assert dana.get(path).status_code == 404, path
    assert dana.get(f"/recordings/{other}/peaks").status_code == 404
    assert dana.post(f"/recordings/{own}/verify", {"csrf": dana.csrf()}).status_code == 403


def test_deleted_and_in_progress_recordings_have_no_player(w: PagesWorld) -> None:
    own, other = w.ids["own"], w.ids["other"]  # type: ignore[attr-defined]
    from accounts.models import utcnow

    with w.sessions.begin() as session:
        gone = session.get(Recording, own)
        live = session.get(Recording, other)
        assert gone is not None and live is not None
        gone.status, gone.deleted_at = "deleted", utcnow()
        live.status = "recording"
    cora = w.browser("cora")
    deleted = cora.get(f"/recordings/{own}").text
    assert 'id="deleted"' in deleted and "<audio" not in deleted and gone.sha256 in deleted
    progress = cora.get(f"/recordings/{other}").text
    assert "still being recorded" in progress and "<audio" not in progress


def test_verify_hold_and_release_for_keepers(w: PagesWorld) -> None:
    own = w.ids["own"]  # type: ignore[attr-defined]
    cora = w.browser("cora")
    page = f"/recordings/{own}"
    assert cora.submit(page, f"{page}/verify", {}).status_code == 303
    assert re.search(r'id="verify-result">match<', cora.get(page).text)
    with w.sessions() as session:
        rec = session.get(Recording, own)
        assert rec is not None
        path = w.root / rec.path  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    cora.submit(page, f"{page}/verify", {})
    assert re.search(r'id="verify-result">mismatch<', cora.get(page).text)
    empty = cora.submit(page, f"{page}/hold", {"action": "hold", "reason": "  "})
    assert empty.status_code == 422 and 'id="reason-error"' in empty.text
    assert (
        cora.submit(page, f"{page}/hold", {"action": "hold", "reason": "Matter 17"}).status_code
        == 303
    )
    assert "<strong>On hold</strong>" in cora.get(page).text
    cora.submit(page, f"{page}/hold", {"action": "release", "reason": "Matter closed"})
    assert "Not on hold." in cora.get(page).text
    assert (
        cora.post(f"{page}/hold", {"action": "hold", "reason": "x"}).status_code == 403
    )  # no csrf
    sam = w.browser("sam")
    assert sam.submit(page, f"{page}/hold", {"reason": "x"}).status_code == 403
    log = cora.get("/audit", params={"target": f"recording:{own}"}).text
    for action in ("recording.verify", "recording.hold", "recording.release"):
        assert action in log
    assert "Matter 17" in log and "Matter closed" in log


def test_audit_page_filters_pages_csv_and_is_audited(w: PagesWorld) -> None:
    cora = w.browser("cora")
    cora.get(f"/recordings/{w.ids['own']}")  # type: ignore[attr-defined]
    page = cora.get("/audit", params={"user": "cora", "action": "recording.read"})
    assert page.status_code == 200 and "recording.read" in page.text
    bad = cora.get("/audit", params={"since": "last week", "user": "cora"})
    assert bad.status_code == 422 and re.search(r'id="e-since">since must be ISO 8601', bad.text)
    before = _last(w)
    export = cora.get("/audit.csv", params={"user": "cora"})
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert rows and {r["user"] for r in rows} == {"cora"}
    assert _actions(w, before) == [("audit.read", "cora", None)]
    for name, status in (("dana", 403), ("sam", 403), ("ada", 200)):
        assert w.browser(name).get("/audit").status_code == status


def test_csv_cells_a_spreadsheet_would_run_are_defused(w: PagesWorld) -> None:
    own = w.ids["own"]  # type: ignore[attr-defined]
    with w.sessions.begin() as session:
        rec = session.get(Recording, own)
        assert rec is not None
        call = session.get(Call, rec.call_id)
        assert call is not None
        call.caller, call.callee = '=HYPERLINK("http://x")', "-1+cmd|' /C calc'!A0"
    rows = list(csv.DictReader(io.StringIO(w.browser("cora").get("/recordings.csv").text)))
    [row] = [r for r in rows if int(r["id"]) == own]
    assert row["caller"] == '\'=HYPERLINK("http://x")'
    assert row["callee"] == "'-1+cmd|' /C calc'!A0"
    for number in ("+12125550101", "-4.5"):  # numbers and phone numbers stay as they are
        assert _cell(number) == number
