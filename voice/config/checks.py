"""What every config section's `validate` uses: the error that names the key, and its checks."""

from __future__ import annotations

import datetime as dt
import re

_CLOCK_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


class ConfigError(ValueError):
    """A configuration key is unknown or has an invalid value; the message names the key."""


def clock_time(key: str, value: str) -> dt.time:
    match = _CLOCK_TIME.fullmatch(value)
    if match is None:
        raise ConfigError(f"{key}: expected a 24-hour time HH:MM, got {value!r}")
    return dt.time(int(match[1]), int(match[2]))


def check_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key}: {value!r} is outside {low}..{high}")
