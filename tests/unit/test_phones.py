import pytest

from accounts.phones import InvalidPhone, caller_e164, normalize


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+12125550123", "+12125550123"),
        ("(212) 555-0123", "+12125550123"),
        ("212.555.0123", "+12125550123"),
        ("12125550123", "+12125550123"),
        ("13125550142", "+13125550142"),
        ("sip:+13125550142@host", "+13125550142"),
        ("sip:+13125550142@pbx.example:5060;transport=udp", "+13125550142"),
        ("sips:2125550123@10.0.0.1", "+12125550123"),
        ("tel:+1-312-555-0142", "+13125550142"),
        ("tel:+1-212-555-0123;phone-context=example.com", "+12125550123"),
        ('"Front Desk" <sip:+12125550123@pbx.local;user=phone>;tag=abc', "+12125550123"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_normalize_uses_region_for_national_numbers() -> None:
    assert normalize("020 7946 0958", region="GB") == "+442079460958"


@pytest.mark.parametrize("raw", ["12ab", "", "   ", "12", "1" * 20, "+999123456", "sip:@host"])
def test_normalize_rejects_invalid(raw: str) -> None:
    with pytest.raises(InvalidPhone) as info:
        normalize(raw)
    assert repr(raw) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_normalize_rejects_unassigned_range() -> None:
    # Possible length, but area code 099 does not exist.
    with pytest.raises(InvalidPhone, match="not an assigned number range"):
        normalize("+10995550123")
    with pytest.raises(InvalidPhone, match="not an assigned number range"):
        normalize("+15551234567")  # area code 555 is unassigned in the NANP


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "anonymous",
        "Anonymous",
        "unknown",
        "restricted",
        "sip:anonymous@anonymous.invalid",
        '"Anonymous" <sip:anonymous@anonymous.invalid>',
        "garbage!!",
        "12ab",
    ],
)
def test_caller_e164_missing_or_withheld(raw: str | None) -> None:
    assert caller_e164(raw, "US") is None


def test_caller_e164_valid() -> None:
    assert caller_e164("sip:+12125550101@gw.example", "US") == "+12125550101"
    assert caller_e164("2125550123", "US") == "+12125550123"


def test_caller_e164_bad_region_does_not_raise() -> None:
    assert caller_e164("2125550123", "ZZ") is None
