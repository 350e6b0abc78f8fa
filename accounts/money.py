"""Money as text, exactly: integer cents in, "12,345.67 USD" out (no float on the way)."""

from __future__ import annotations


def money_text(cents: int, currency: str) -> str:
    sign = "-" if cents < 0 else ""
    units, rest = divmod(abs(cents), 100)
    return f"{sign}{units:,}.{rest:02d} {currency}"
