"""Recording search: each filter, combinations, collector scoping (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from recordings.search import RecordingFilter, RecordingSearch, Scope, SearchError
from recordings.verify import RecordingNotFound
from tests.unit.recdata import T0, World, build_world


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    yield from build_world(database_url, tmp_path / "recordings")


@pytest.fixture
def ids(world: World) -> dict[str, int]:
    day = dt.timedelta(days=1)
    calls = {
        # Stored caller IDs come off the wire in many spellings.
        "dana_in": world.call(caller="+12125550101"),
        "dana_out": world.call(
            direction="outbound", caller="dana", callee="2125550101", started_at=T0 + day
        ),
        "marcus_in": world.call(account="20001", caller="12125550102", started_at=T0 + 2 * day),
        "stranger": world.call(account=None, caller="+442079460018", started_at=T0 + 3 * day),
    }
    out = {}
    for name, call_id in calls.items():
        started = T0 + dt.timedelta(days=list(calls).index(name))
        out[name] = world.recording(call_id, started_at=started)
    world.transcript(calls["dana_in"], "I will pay the balance on Friday")
    world.transcript(calls["dana_in"], "Thank you for calling", speaker="ivr")
    world.transcript(calls["marcus_in"], "100% sure the invoice_number is wrong")
    return out


EVERYTHING = Scope.all()


def _find(world: World, scope: Scope = EVERYTHING, **kw: object) -> list[int]:
    return [r.id for r in RecordingSearch(world.sessions).search(RecordingFilter(**kw), scope)]


def test_filters(world: World, ids: dict[str, int]) -> None:
    everything = _find(world)
    assert everything == [ids["stranger"], ids["marcus_in"], ids["dana_out"], ids["dana_in"]]
    assert _find(world, account="10042") == [ids["dana_out"], ids["dana_in"]]
    assert _find(world, account="nope") == []
    # One number, three stored spellings, found from a fourth.
    assert _find(world, phone="(212) 555-0101") == [ids["dana_out"], ids["dana_in"]]
    assert _find(world, phone="+1 212 555 0102") == [ids["marcus_in"]]
    assert _find(world, phone="+44 20 7946 0018") == [ids["stranger"]]
    assert _find(world, collector="Marcus Lee") == [ids["marcus_in"]]
    assert _find(world, collector=str(world.dana)) == [ids["dana_out"], ids["dana_in"]]
    assert _find(world, direction="outbound") == [ids["dana_out"]]
    day = dt.timedelta(days=1)
    assert _find(world, start=T0 + day, end=T0 + 3 * day) == [ids["marcus_in"], ids["dana_out"]]
    assert _find(world, words="balance FRIDAY") == [ids["dana_in"]]
    assert _find(world, words="balance thank") == [ids["dana_in"]]  # words from two utterances
    assert _find(world, words="balance wrong") == []
    # Words are letters and digits (the text index's terms): punctuation only separates them.
    assert _find(world, words="100%") == [ids["marcus_in"]]
    assert _find(world, words="invoice_number") == [ids["marcus_in"]]
    assert _find(world, account="10042", direction="inbound", words="friday") == [ids["dana_in"]]
    assert _find(world, limit=2, offset=1) == [ids["marcus_in"], ids["dana_out"]]


def test_collectors_see_only_their_accounts(world: World, ids: dict[str, int]) -> None:
    dana = Scope.collector(world.dana)
    assert _find(world, dana) == [ids["dana_out"], ids["dana_in"]]
    assert _find(world, dana, account="20001") == []
    assert _find(world, dana, phone="+12125550102") == []
    assert _find(world, Scope.collector(None)) == []  # a collector login with no collector
    search = RecordingSearch(world.sessions)
    assert search.get(ids["dana_in"], dana).account_number == "10042"
    for hidden in (ids["marcus_in"], ids["stranger"], 999_999):
        with pytest.raises(RecordingNotFound):
            search.get(hidden, dana)
    info = search.get(ids["stranger"], Scope.all())
    assert (info.account_number, info.collector, info.caller) == (None, None, "+442079460018")
    assert info.to_json()["started_at"] == (T0 + dt.timedelta(days=3)).isoformat()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"phone": "12ab"}, "phone: invalid phone '12ab'"),
        ({"direction": "sideways"}, "direction: expected one of inbound, outbound"),
        ({"words": " ".join(["w"] * 11)}, "q: at most 10 words"),
        ({"words": "x" * 65}, "q: words of at most 64 characters"),
        ({"words": "% _"}, "q: no word to search for"),
        ({"limit": 0}, "limit: expected 1..500"),
        ({"offset": -1}, "offset: expected 0 or more"),
        ({"start": dt.datetime(2026, 1, 1)}, "from: naive datetime"),
    ],
)
def test_bad_parameters_are_named(world: World, kw: dict[str, object], message: str) -> None:
    with pytest.raises(SearchError, match=message.replace("(", r"\(")):
        _find(world, **kw)
