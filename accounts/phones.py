"""Phone number normalisation to E.164, for stored contacts and for SIP caller IDs."""

from __future__ import annotations

import re

import phonenumbers

# SIP/tel URIs: optional display name and <...>, a scheme, user part, then @host and ;params.
_ANGLE = re.compile(r"<([^>]*)>")
_SCHEME = re.compile(r"^(?:sips?|tel):", re.IGNORECASE)

# Caller-ID values that mean "no number" rather than a malformed one.
# Caller-ID user parts that mean "withheld" (RFC 3323 anonymous, and carriers' spellings).
WITHHELD = frozenset({"", "anonymous", "unknown", "restricted", "private", "unavailable"})


_PARSE_REASONS = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "unknown or missing country code",
    phonenumbers.NumberParseException.NOT_A_NUMBER: "not a phone number",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "too short",
    phonenumbers.NumberParseException.TOO_LONG: "too long",
}


class InvalidPhone(ValueError):
    def __init__(self, raw: str, reason: str) -> None:
        super().__init__(f"invalid phone {raw!r}: {reason}")
        self.raw = raw
        self.reason = reason


def _strip_uri(raw: str) -> str:
    text = raw.strip()
    match = _ANGLE.search(text)
    if match:
        text = match.group(1).strip()
    text = _SCHEME.sub("", text)
    # The user part is the number; host and URI/user parameters are routing details.
    return text.split("@", 1)[0].split(";", 1)[0].strip()


def normalize(raw: str, region: str = "US") -> str:
    """Return `raw` in E.164 form, reading numbers without a '+' as national to `region`."""
    digits = _strip_uri(raw)
    if not digits:
        raise InvalidPhone(raw, "no number")
    try:
        number = phonenumbers.parse(digits, region)
    except phonenumbers.NumberParseException as exc:
        reason = _PARSE_REASONS.get(exc.error_type, "not a phone number")
        raise InvalidPhone(raw, reason) from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidPhone(raw, "wrong number of digits")
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone(raw, "not an assigned number range")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# A number in E.164 as stored and dialled: "+", a country code not starting with 0, 15 digits
# at most. The one pattern config, guardrails and dial-out check numbers against.
E164 = re.compile(r"\+[1-9][0-9]{1,14}")


def caller_e164(raw: str | None, region: str) -> str | None:
    """E.164 of a caller ID, or None when it is missing, withheld or unparseable."""
    if raw is None:
        return None
    if _strip_uri(raw).lower() in WITHHELD:
        return None
    try:
        return normalize(raw, region)
    except InvalidPhone:
        return None
