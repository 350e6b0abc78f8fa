from __future__ import annotations

import json

import pytest

from voice.asr.phrases import KOREAN, UNKNOWN, PhraseSet, normalize

ENGLISH = PhraseSet.from_mapping(
    {"balance": ["Balance", "my balance"], "agent": ["agent", "an agent", "Agent!"]},
    language="en",
)


def test_normalize() -> None:
    assert normalize("  My   BALANCE, please! ") == "my balance please"
    assert normalize("마지막\u3000청구서.") == "마지막 청구서"  # ideographic space
    assert normalize("ＡＧＥＮＴ") == "agent"  # full-width letters
    assert normalize("[unk]") == "unk"
    assert normalize("...") == ""


def test_from_mapping_keeps_order_and_drops_duplicates() -> None:
    assert ENGLISH.language == "en"
    assert ENGLISH.options == (
        ("balance", ("balance", "my balance")),
        ("agent", ("agent", "an agent")),
    )
    assert ENGLISH.phrases == ("balance", "my balance", "agent", "an agent")


def test_grammar_json_is_the_phrases_plus_unknown() -> None:
    grammar = KOREAN.grammar_json()
    assert "잔액" in grammar  # UTF-8 text, not \\u escapes
    assert json.loads(grammar) == [*KOREAN.phrases, UNKNOWN]


@pytest.mark.parametrize(
    ("text", "option"),
    [
        ("balance", "balance"),
        ("My Balance.", "balance"),
        ("an  agent", "agent"),
        ("agent balance", None),  # two phrases: no single choice
        ("my", None),  # part of a phrase
        ("[unk]", None),
        ("balance [unk]", None),
        ("", None),
    ],
)
def test_match_english(text: str, option: str | None) -> None:
    assert ENGLISH.match(text) == option


@pytest.mark.parametrize(
    ("text", "option"),
    [
        ("잔액", "balance"),
        ("마지막 청구서", "last_invoice"),
        ("마지막 결제", "last_payment"),
        ("상담원", "agent"),
        ("네", "yes"),
        ("예", "yes"),
        ("아니요", "no"),
        ("아니오", "no"),
        ("다시", "repeat"),
        ("다시 듣기", "repeat"),
        ("마지막", None),
        ("마지막 네", None),  # what Vosk's word loop makes of garbage
        ("네 다시", None),
    ],
)
def test_match_korean(text: str, option: str | None) -> None:
    assert KOREAN.match(text) == option


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({}, "asr.phrases.xx: no options"),
        ({"Balance": ["x"]}, "asr.phrases.xx: option name 'Balance' is not [a-z][a-z0-9_]*"),
        ({"balance": []}, "asr.phrases.xx.balance: expected a non-empty list of phrases"),
        ({"balance": "x"}, "asr.phrases.xx.balance: expected a non-empty list of phrases"),
        ({"balance": ["ok", " ! "]}, "asr.phrases.xx.balance: ' ! ' is not a phrase"),
        ({"balance": [3]}, "asr.phrases.xx.balance: 3 is not a phrase"),
        ({"balance": ["[unk]"]}, "asr.phrases.xx.balance: '[unk]' is not a phrase"),
        (
            {"yes": ["yes", "OK"], "agent": ["ok"]},
            "asr.phrases.xx.agent: 'ok' is also a phrase of yes",
        ),
    ],
)
def test_from_mapping_refuses(mapping: dict, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        PhraseSet.from_mapping(mapping, language="xx")
    assert str(caught.value) == message


def test_phrase_sets_compare_by_value() -> None:
    again = PhraseSet.from_mapping({"balance": ["잔액"]}, language="ko")
    assert again == PhraseSet.from_mapping({"balance": ["잔액"]}, language="ko")
    assert again != KOREAN
    assert KOREAN.match("잔액") == "balance"  # cached lookup does not change equality
    assert again == PhraseSet("ko", (("balance", ("잔액",)),))
