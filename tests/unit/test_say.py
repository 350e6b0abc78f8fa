from __future__ import annotations

import datetime
import random
import re

import pytest

from voice.ivr import say

TOKEN = re.compile(r"^[a-z0-9_]+$")


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, ["zero"]),
        (7, ["seven"]),
        (21, ["twenty", "one"]),
        (105, ["one", "hundred", "five"]),
        (1234, ["one", "thousand", "two", "hundred", "thirty", "four"]),
        (-42, ["minus", "forty", "two"]),
        (1_000_000_001, ["one", "billion", "one"]),
    ],
)
def test_number(n: int, expected: list[str]) -> None:
    assert say.number(n) == expected


def test_number_too_large_is_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        say.number(10**15)


@pytest.mark.parametrize(
    ("cents", "currency", "expected"),
    [
        (
            123456,
            "USD",
            ["one", "thousand", "two", "hundred", "thirty", "four", "dollars",
             "and", "fifty", "six", "cents"],
        ),
        (100, "USD", ["one", "dollar"]),
        (101, "USD", ["one", "dollar", "and", "one", "cent"]),
        (200, "USD", ["two", "dollars"]),
        (0, "USD", ["zero", "dollars"]),
        (56, "USD", ["fifty", "six", "cents"]),
        (1, "usd", ["one", "cent"]),
        (-150, "USD", ["minus", "one", "dollar", "and", "fifty", "cents"]),
        (100, "EUR", ["one", "euro"]),
        (250, "EUR", ["two", "euros", "and", "fifty", "cents"]),
        (101, "GBP", ["one", "pound", "and", "one", "penny"]),
        (350, "GBP", ["three", "pounds", "and", "fifty", "pence"]),
        (100, "CAD", ["one", "canadian", "dollar"]),
        (1099, "CAD", ["ten", "canadian", "dollars", "and", "ninety", "nine", "cents"]),
        (5, "CAD", ["five", "canadian", "cents"]),
        (0, "CAD", ["zero", "canadian", "dollars"]),
        (
            12305,
            "CHF",
            ["letter_c", "letter_h", "letter_f", "one", "hundred", "twenty", "three",
             "point", "zero", "five"],
        ),
        (700, "CHF", ["letter_c", "letter_h", "letter_f", "seven"]),
        (
            250_000_000_00,
            "USD",
            ["two", "hundred", "fifty", "million", "dollars"],
        ),
    ],
)  # fmt: skip
def test_money(cents: int, currency: str, expected: list[str]) -> None:
    assert say.money(cents, currency) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4021", ["four", "zero", "two", "one"]),
        ("ab-12", ["letter_a", "letter_b", "pause", "one", "two"]),
        ("AB 1/2", ["letter_a", "letter_b", "pause", "one", "pause", "two"]),
        # A run of separators is one pause, and none at the ends.
        (" -7 - /8- ", ["seven", "pause", "eight"]),
        ("x#1.2", ["letter_x", "one", "two"]),
        ("é٣", []),  # non-ASCII letters and digits are not in the clip vocabulary
        ("", []),
    ],
)
def test_digits(text: str, expected: list[str]) -> None:
    assert say.digits(text) == expected


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        (datetime.date(2026, 3, 5), ["march", "fifth", "twenty", "twenty", "six"]),
        (datetime.date(2024, 2, 29), ["february", "twenty", "ninth", "twenty", "twenty", "four"]),
        (datetime.date(2025, 12, 31), ["december", "thirty", "first", "twenty", "twenty", "five"]),
        (datetime.date(2000, 1, 1), ["january", "first", "two", "thousand"]),
        (datetime.date(2005, 7, 2), ["july", "second", "two", "thousand", "five"]),
        (
            datetime.date(1999, 11, 22),
            ["november", "twenty", "second", "nineteen", "ninety", "nine"],
        ),
    ],
)
def test_date(d: datetime.date, expected: list[str]) -> None:
    assert say.date(d) == expected


def test_text_of() -> None:
    assert say.text_of("letter_a") == "A"
    assert say.text_of("thirty") == "thirty"
    assert say.text_of("pause") == ""
    with pytest.raises(KeyError):
        say.text_of("banana")


def test_vocabulary_tokens_are_clip_names() -> None:
    assert all(TOKEN.match(t) for t in say.VOCABULARY)
    for t in say.VOCABULARY:
        say.text_of(t)


def _assert_in_vocabulary(tokens: list[str], what: object) -> None:
    unknown = set(tokens) - say.VOCABULARY
    assert not unknown, f"{what!r} produced tokens outside VOCABULARY: {unknown}"


def test_vocabulary_covers_everything_the_functions_produce() -> None:
    rng = random.Random(1234)
    ints = [*range(-1000, 2001), 10**9, -(10**9)]
    ints += [rng.randrange(-(10**9), 10**9 + 1) for _ in range(5000)]
    for n in ints:
        _assert_in_vocabulary(say.number(n), n)
    cents = [*range(0, 1001), *(rng.randrange(-(10**12), 10**12) for _ in range(3000))]
    for c in cents:
        for currency in ("USD", "EUR", "GBP", "CAD", "JPY"):
            _assert_in_vocabulary(say.money(c, currency), (c, currency))
    day = datetime.date(2024, 1, 1)
    while day < datetime.date(2027, 1, 1):
        _assert_in_vocabulary(say.date(day), day)
        day += datetime.timedelta(days=1)
    for year in range(1, 10000):
        _assert_in_vocabulary(say.date(datetime.date(year, 1, 1)), year)
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-/ #.é"
    for _ in range(2000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 20)))
        _assert_in_vocabulary(say.digits(s), s)
