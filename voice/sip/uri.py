"""Pure helpers for the SIP header values we read. Input is untrusted: None, never an exception."""

from __future__ import annotations

import re

from accounts.phones import WITHHELD

# name-addr or addr-spec: optional display name, then sip:/sips:/tel: URI, optionally in <>.
_URI = re.compile(r"<?\s*(?P<scheme>sips?|tel):(?P<rest>[^>;?\s]*)", re.IGNORECASE)
_USER_OK = re.compile(r"^[A-Za-z0-9+*#._~()-]{1,64}$")
# A quoted display name is free text chosen by the caller: it may itself look like a URI.
_QUOTED_NAME = re.compile(r'^\s*"(?:[^"\\]|\\.)*"')


def user_part(value: str | None) -> str | None:
    """The user part of a From/To value (`"Bob" <sip:+1555@host>` → `+1555`), or None.

    Only characters that may appear in a phone number or SIP user are kept; anything else
    (escapes, quotes, over-long values) yields None so it can never leak into later processing.
    """
    if not value:
        return None
    text = _QUOTED_NAME.sub("", value, count=1)
    if text.lstrip().startswith('"'):
        return None  # unterminated display name
    if "<" in text:  # name-addr: only what is inside <...> is the URI
        text = text[text.index("<") :]
    match = _URI.search(text)
    if not match:
        return None
    rest = match.group("rest")
    user = rest if match.group("scheme").lower() == "tel" else rest.split("@", 1)[0]
    if "@" not in rest and match.group("scheme").lower() != "tel":
        return None
    return user if _USER_OK.match(user) else None


def caller_id(value: str | None) -> str | None:
    """The caller's number from a From value, or None when missing, withheld or unsafe."""
    user = user_part(value)
    return None if user is None or user.lower() in WITHHELD else user
