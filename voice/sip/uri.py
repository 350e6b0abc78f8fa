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


_SOFTPHONE = re.compile(r"[a-z0-9._-]{1,64}")  # accounts.models.SOFTPHONE_USERNAME
_REQUEST_LINE = re.compile(r"^[A-Z]+ (?P<uri>\S+) SIP/2\.0\r?$")


def header(message: str, name: str) -> str | None:
    """The value of the first header `name` (case-insensitive, no compact forms) of a SIP
    message's head, stripped; None if absent."""
    head = message.split("\r\n\r\n", 1)[0]
    wanted = name.lower()
    for line in head.split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == wanted:
            return value.strip()
    return None


def softphone_of(message: str) -> str | None:
    """The softphone user Kamailio named in `X-Voice-Softphone`, if it is a valid user name."""
    value = header(message, "X-Voice-Softphone")
    return value if value is not None and _SOFTPHONE.fullmatch(value) else None


def request_user(message: str) -> str | None:
    """The user part of a request's Request-URI (the number a softphone dialled), or None."""
    first = message.split("\n", 1)[0]
    match = _REQUEST_LINE.match(first)
    return user_part(match.group("uri")) if match else None


def reason_header(code: int, text: str) -> str:
    """A `Reason` header value (RFC 3326) carrying `text` safely quoted and bounded."""
    clean = re.sub(r"[^\x20-\x7e]", " ", text).replace("\\", "/").replace('"', "'")[:200]
    return f'SIP;cause={int(code)};text="{clean}"'
