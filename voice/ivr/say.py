"""Values to spoken-word tokens: numbers, money, digit strings and dates.

A token is a lowercase word of `[a-z0-9_]` naming one pre-rendered clip, so every sentence the
IVR builds from data is a concatenation of clips out of a closed `VOCABULARY` that can be
rendered ahead of the first call. Pure functions, no I/O.

Spelling comes from num2words; we only tokenise it. The "and" num2words puts inside numbers
("two hundred and five") is dropped everywhere, so that in money "and" only ever joins the
major and minor units ("five dollars and ten cents") and is never ambiguous.
"""

from __future__ import annotations

import datetime
import re
import string
from dataclasses import dataclass

from num2words import num2words

PAUSE = "pause"
POINT = "point"
MINUS = "minus"
AND = "and"

# The largest scale word VOCABULARY covers is "trillion"; beyond that a new word would appear.
MAX_ABS_NUMBER = 10**15 - 1

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_SEPARATORS = frozenset("-/ ")
_MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_SPLIT = re.compile(r"[\s,\-]+")


@dataclass(frozen=True)
class _Currency:
    major: tuple[str, str]  # singular, plural
    minor: tuple[str, str]
    qualifier: tuple[str, ...] = ()  # spoken before the unit word: "five canadian dollars"


_CURRENCIES: dict[str, _Currency] = {
    "USD": _Currency(("dollar", "dollars"), ("cent", "cents")),
    "EUR": _Currency(("euro", "euros"), ("cent", "cents")),
    "GBP": _Currency(("pound", "pounds"), ("penny", "pence")),
    "CAD": _Currency(("dollar", "dollars"), ("cent", "cents"), ("canadian",)),
}


def _tokens(words: str) -> list[str]:
    return [w for w in _SPLIT.split(words.lower()) if w and w != AND]


def number(n: int) -> list[str]:
    """Cardinal number: 1234 -> one thousand two hundred thirty four."""
    if abs(n) > MAX_ABS_NUMBER:
        raise ValueError(f"number {n} is too large to speak (limit {MAX_ABS_NUMBER})")
    if n < 0:
        return [MINUS, *number(-n)]
    return _tokens(num2words(n, lang="en"))


def money(cents: int, currency: str = "USD") -> list[str]:
    """An amount in minor units: 123456 USD -> ... thirty four dollars and fifty six cents."""
    if cents < 0:
        return [MINUS, *money(-cents, currency)]
    major, minor = divmod(cents, 100)
    code = currency.upper()
    cur = _CURRENCIES.get(code)
    if cur is None:
        # No unit words for this currency: name it letter by letter, then the plain amount.
        amount = number(major)
        if minor:
            amount += [POINT, _DIGIT_WORDS[minor // 10], _DIGIT_WORDS[minor % 10]]
        return [*digits(code), *amount]
    if major and minor:
        return [*_amount(major, cur.major, cur), AND, *number(minor), _unit(minor, cur.minor)]
    if minor:
        return _amount(minor, cur.minor, cur)
    return _amount(major, cur.major, cur)


def _unit(n: int, forms: tuple[str, str]) -> str:
    return forms[0] if n == 1 else forms[1]


def _amount(n: int, forms: tuple[str, str], cur: _Currency) -> list[str]:
    # The qualifier sits right before the unit word: "five canadian dollars".
    return [*number(n), *cur.qualifier, _unit(n, forms)]


def digits(text: str) -> list[str]:
    """Read an identifier character by character; separators become one short pause."""
    out: list[str] = []
    for ch in text.lower():
        if ch in string.digits:
            out.append(_DIGIT_WORDS[int(ch)])
        elif ch in string.ascii_lowercase:
            out.append(f"letter_{ch}")
        elif ch in _SEPARATORS and out and out[-1] != PAUSE:
            out.append(PAUSE)
    if out and out[-1] == PAUSE:
        out.pop()
    return out


def date(d: datetime.date) -> list[str]:
    """March 5, 2026 -> march fifth twenty twenty six."""
    return [
        _MONTHS[d.month - 1],
        *_tokens(num2words(d.day, lang="en", to="ordinal")),
        *_tokens(num2words(d.year, lang="en", to="year")),
    ]


def text_of(token: str) -> str:
    """What the TTS engine should say for a vocabulary token ("" for a pause)."""
    if token not in VOCABULARY:
        raise KeyError(f"{token!r} is not a say vocabulary token")
    if token == PAUSE:
        return ""
    if token.startswith("letter_"):
        # A capital letter alone is read as the letter's name ("ay"), not the article "a".
        return token.removeprefix("letter_").upper()
    return token


def _build_vocabulary() -> frozenset[str]:
    words: set[str] = {PAUSE, POINT, MINUS, AND, "oh", *_MONTHS}
    # Any number is groups of 0..999 plus scale words; 0..999 is 0..99 plus "hundred".
    for n in (*range(100), *(10**k for k in range(2, 15, 3)), *(10**k for k in range(3, 15, 3))):
        words.update(number(n))
    for day in range(1, 32):
        words.update(_tokens(num2words(day, lang="en", to="ordinal")))
    words.update(f"letter_{c}" for c in string.ascii_lowercase)
    for cur in _CURRENCIES.values():
        words.update((*cur.major, *cur.minor, *cur.qualifier))
    return frozenset(words)


VOCABULARY: frozenset[str] = _build_vocabulary()
