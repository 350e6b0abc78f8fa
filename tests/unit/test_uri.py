"""user_part: the user of a From/To header value, or None for anything unsafe or malformed."""

from __future__ import annotations

import pytest

from voice.sip.uri import caller_id, user_part


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # name-addr
        ('"Bob" <sip:+15551234567@pbx.example>', "+15551234567"),
        ('"Bob Smith" <sip:bob@pbx.example;transport=tcp>;tag=a1b2', "bob"),
        ("Bob <sip:bob@pbx.example>", "bob"),
        ("<sip:2125550101@10.0.0.1:5060>", "2125550101"),
        ("  <sip:alice@host>  ", "alice"),
        # addr-spec
        ("sip:alice@example.com", "alice"),
        ("sip:alice@example.com;tag=123", "alice"),
        ("sip:+12125550101@127.0.0.1:5070;user=phone", "+12125550101"),
        ("sip:*69@host?subject=x", "*69"),
        ("SIP:Alice@Example.com", "Alice"),
        # sips
        ("sips:carol@secure.example", "carol"),
        ('"C" <sips:+4420123@secure.example>', "+4420123"),
        # tel
        ("tel:+12125550101", "+12125550101"),
        ("<tel:+1-212-555-0101;phone-context=example.com>", "+1-212-555-0101"),
        ('"Carrier" <tel:2125550101>', "2125550101"),
        # user-part characters that are allowed
        ("sip:user.name_x~(1)@h", "user.name_x~(1)"),
        ("sip:" + "1" * 64 + "@h", "1" * 64),
        # anonymous / withheld arrives as a user; the ledger treats it as withheld
        ('"Anonymous" <sip:anonymous@anonymous.invalid>', "anonymous"),
        ("sip:anonymous@anonymous.invalid", "anonymous"),
    ],
)
def test_user_part(value: str, expected: str) -> None:
    assert user_part(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "bob",
        "bob@example.com",
        "http://bob@example.com",
        "mailto:bob@example.com",
        "<>",
        '"Bob"',
        "sip:",
        "sip:@host",  # empty user
        "sip:example.com",  # no user at all
        "<sip:pbx.example>",
        "sip:;user=phone@h",
        "tel:",
        # unsafe characters in the user part
        "sip:../../etc@x",
        "sip:..%2f..%2fetc@x",
        "sip:bob%40evil@x",
        'sip:bo"b@x',
        "sip:bob'--@x",
        "sip:$(reboot)@x",
        "sip:a`id`@x",
        "sip:a{b}@x",
        "sip:a\\b@x",
        "sip:a|b@x",
        "sip:a\x00b@x",
        "tel:+1555<script>",
        "sip:a\u00e9@x",
        "sip:\uff11\uff12@x",  # fullwidth digits look like digits but are not ASCII
        "sip:" + "1" * 65 + "@h",
        "sip:" + "a" * 10_000 + "@h",
        # an unterminated quoted display name is malformed
        '"Bob <sip:bob@x>',
    ],
)
def test_user_part_rejects(value: str | None) -> None:
    assert user_part(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # The display name is free text chosen by the caller: a URI inside it is not the URI.
        ('"sip:+15550000000@spoof" <sip:+12125550101@pbx>', "+12125550101"),
        ('"Bob <sip:evil@x>" <sip:real@pbx>', "real"),
        ('"tel:+15550000000" <tel:+12125550101>', "+12125550101"),
        ('"say \\"sip:evil@x\\"" <sip:real@pbx>', "real"),
        ("sip:evil@x <sip:real@pbx>", "real"),
    ],
)
def test_display_name_cannot_supply_the_user(value: str, expected: str) -> None:
    assert user_part(value) == expected


def test_user_part_never_raises_on_odd_input() -> None:
    for value in ["<" * 1000, '"' * 1001, "sip:" * 500, "\r\n\t", "<sip:a@b" + ">" * 50]:
        result = user_part(value)
        assert result is None or result == "a"
    assert user_part("<sip:a@b" + ">" * 50) == "a"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"Anonymous" <sip:anonymous@anonymous.invalid>;tag=1', None),
        ("<sip:Restricted@gw>", None),
        ("sip:unknown@10.0.0.1", None),
        (None, None),
        ("<sip:+12125550101@gw>;tag=9", "+12125550101"),
    ],
)
def test_caller_id_treats_withheld_as_none(value: str | None, expected: str | None) -> None:
    assert caller_id(value) == expected
