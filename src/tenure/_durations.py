"""Durations: ``timedelta`` in the API, strings like ``15s`` or ``1m30s`` on the CLI."""

from __future__ import annotations

import re
from datetime import timedelta

from tenure.errors import ConfigError

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str, *, field: str = "duration") -> timedelta:
    """Parse ``500ms``, ``15s``, ``1m30s``, ``2h`` or a bare number of seconds.

    >>> parse_duration("1m30s")
    datetime.timedelta(seconds=90)
    """
    raw = text.strip().lower()
    try:
        return timedelta(seconds=float(raw))
    except ValueError:
        pass
    pos = 0
    total = 0.0
    for match in _PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or not raw:
        raise ConfigError(
            f"{field}: {text!r} is not a duration; write it like 500ms, 15s, 1m30s or 2h"
        )
    return timedelta(seconds=total)


def as_timedelta(value: timedelta | float | int | str | None, *, field: str) -> timedelta | None:
    """Accept a ``timedelta``, seconds as a number, or a duration string."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ConfigError(f"{field}: expected a duration, got {value!r}")
    elif isinstance(value, int | float):
        result = timedelta(seconds=value)
    elif isinstance(value, str):
        result = parse_duration(value, field=field)
    else:
        raise ConfigError(f"{field}: expected a duration, got {type(value).__name__}")
    if result < timedelta(0):
        raise ConfigError(f"{field}: must not be negative, got {value!r}")
    return result


def positive(value: timedelta | float | int | str, *, field: str) -> timedelta:
    """Like :func:`as_timedelta` but the result must be greater than zero."""
    result = as_timedelta(value, field=field)
    if result is None or result <= timedelta(0):
        raise ConfigError(f"{field}: must be greater than zero, got {value!r}")
    return result
