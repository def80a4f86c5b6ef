"""Durations: ``timedelta`` in the API, strings like ``15s`` or ``1m30s`` on the CLI.

Every duration tenure accepts is finite, not negative and at most :data:`MAX_DURATION`
(a field may set a tighter bound); anything else is a :class:`ConfigError` naming the
field, never an ``OverflowError`` from ``timedelta``.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from tenure.errors import ConfigError

MAX_DURATION = timedelta(days=36500)
"""The longest duration any setting accepts (about 100 years): ``now()`` plus or minus it
is still a timestamp PostgreSQL can store, and a thread can still wait that long."""

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def format_duration(value: timedelta) -> str:
    """The shortest of ``10ms``, ``15s``, ``5m``, ``1h`` or ``1d`` that names ``value``
    exactly, else seconds (``1.5s``)."""
    seconds = value.total_seconds()
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def out_of_range(
    field: str, got: object, minimum: timedelta | None, maximum: timedelta
) -> ConfigError:
    """The one error every duration outside its bounds raises."""
    if minimum is None:
        bounds = f"must be at most {format_duration(maximum)}"
    else:
        bounds = f"must be between {format_duration(minimum)} and {format_duration(maximum)}"
    shown = format_duration(got) if isinstance(got, timedelta) else repr(got)
    return ConfigError(f"{field}: {bounds}, got {shown}")


def check_range(
    value: timedelta,
    *,
    field: str,
    minimum: timedelta | None = None,
    maximum: timedelta = MAX_DURATION,
) -> timedelta:
    """``value`` if it lies within ``[minimum, maximum]``, else a ConfigError naming both."""
    if value > maximum or (minimum is not None and value < minimum):
        raise out_of_range(field, value, minimum, maximum)
    return value


def _not_a_duration(field: str, got: object) -> ConfigError:
    return ConfigError(f"{field}: {got!r} is not a duration; write it like 500ms, 15s, 1m30s or 2h")


def _seconds(
    value: float,
    got: object,
    field: str,
    minimum: timedelta | None,
    maximum: timedelta,
) -> timedelta:
    if math.isnan(value):
        raise _not_a_duration(field, got)
    if value < 0 and minimum is None:
        raise ConfigError(f"{field}: must not be negative, got {got!r}")
    low = 0.0 if minimum is None else minimum.total_seconds()
    if not low <= value <= maximum.total_seconds():  # infinity too: timedelta cannot hold it
        raise out_of_range(field, got, minimum, maximum)
    return timedelta(seconds=value)


def parse_duration(
    text: str,
    *,
    field: str = "duration",
    minimum: timedelta | None = None,
    maximum: timedelta = MAX_DURATION,
) -> timedelta:
    """Parse ``500ms``, ``15s``, ``1m30s``, ``2h`` or a bare number of seconds, within
    ``[minimum, maximum]`` (not negative when no minimum is given).

    >>> parse_duration("1m30s")
    datetime.timedelta(seconds=90)
    """
    raw = text.strip().lower()
    try:
        seconds = float(raw)
    except ValueError:
        seconds = _sum_of_parts(raw, text, field)
    return _seconds(seconds, text, field, minimum, maximum)


def _sum_of_parts(raw: str, text: str, field: str) -> float:
    pos = 0
    total = 0.0
    for match in _PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or not raw:
        raise _not_a_duration(field, text)
    return total


def as_timedelta(value: timedelta | float | int | str | None, *, field: str) -> timedelta | None:
    """Accept a ``timedelta``, seconds as a number, or a duration string."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ConfigError(f"{field}: expected a duration, got {value!r}")
    elif isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
        result = _seconds(seconds, value, field, None, MAX_DURATION)
    elif isinstance(value, str):
        result = parse_duration(value, field=field)
    else:
        raise ConfigError(f"{field}: expected a duration, got {type(value).__name__}")
    if result < timedelta(0):
        raise ConfigError(f"{field}: must not be negative, got {value!r}")
    return check_range(result, field=field)


def positive(value: timedelta | float | int | str, *, field: str) -> timedelta:
    """Like :func:`as_timedelta` but the result must be greater than zero."""
    result = as_timedelta(value, field=field)
    if result is None or result <= timedelta(0):
        raise ConfigError(f"{field}: must be greater than zero, got {value!r}")
    return result


def exponential(n: int, *, base: float, cap: float, factor: float = 2.0) -> float:
    """tenure's one backoff curve: seconds before the retry that follows the ``n``-th
    consecutive failure, ``base`` growing by ``factor`` each time, at most ``cap``
    (jitter, where one is wanted, is applied to what this returns)."""
    if n <= 0:
        return 0.0
    return float(min(cap, base * factor ** (n - 1)))
