"""Rate limits: at most N starts per period, fleet-wide, on a task or a queue.

>>> reg.task(rate="50/s", rate_per_key="5/s", cost=lambda p: p["pages"])  # doctest: +SKIP
>>> reg.queue("ocr", rate=Rate.parse("600/min", burst=20),
...           rate_keys={"big": "50/s"})                           # doctest: +SKIP

A rate is a token bucket kept in the database: it refills at ``per_second`` up to
``burst`` units, and the claim that starts a task spends the task's cost (1 unless
the sender said otherwise) in the same statement that claims it, under the bucket's
lock, so two workers can never jointly exceed it. In any window of T seconds a bucket
lets at most ``burst + per_second × T`` units start, and never more than ``burst`` at
once. ``burst`` defaults to one second of the rate (at least 1).

A task or a queue may have a rate as a whole (``rate``), a default rate for each of
its partition keys (``rate_per_key``) and rates of their own for some keys
(``rate_keys``, a tenant on a bigger plan); a task is started only when every bucket
it belongs to can pay for it, and a key at its limit never holds back the others. A
start after a takeover, or of a prefetched task handed back, spends nothing again.
An operator may set any of these at run time (``tenure rates set``); the next claim
obeys, and the operator's setting wins over the code's until it is cleared.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tenure.errors import ConfigError

#: Units one task may cost at most.
MAX_COST = 1_000_000
#: The fastest rate and the largest burst accepted (a bucket holds a double).
MAX_PER_SECOND = 1e9

_PERIODS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$")

Cost = int | Callable[[Any], int]
"""What a task costs each start: a number of units, or a function of its payload."""


@dataclass(frozen=True)
class Rate:
    """``per_second`` units a second, at most ``burst`` at once."""

    per_second: float
    burst: float

    def __post_init__(self) -> None:
        if not (0 < self.per_second <= MAX_PER_SECOND):
            raise ConfigError(
                f"rate: must be more than 0 and at most {MAX_PER_SECOND:g} per second, "
                f"got {self.per_second!r}"
            )
        if not (1 <= self.burst <= MAX_PER_SECOND):
            raise ConfigError(
                f"burst: must be at least 1 and at most {MAX_PER_SECOND:g}, got {self.burst!r}"
            )

    @classmethod
    def parse(cls, value: Rate | str, *, burst: float | None = None, field: str = "rate") -> Rate:
        """A rate from ``"50/s"``, ``"600/min"``, ``"1000/h"``, ``"5/10s"`` or a Rate;
        ``burst`` overrides the default (one second of the rate, at least 1)."""
        if isinstance(value, Rate):
            return value if burst is None else cls(value.per_second, _burst(burst, field))
        if not isinstance(value, str):
            raise ConfigError(f"{field}: must be a rate like '50/s' or '600/min', got {value!r}")
        m = _RATE.match(value.lower())
        if m is None or m.group(3) not in _PERIODS:
            raise ConfigError(
                f"{field}: must be a rate like '50/s', '600/min' or '5/10s', got {value!r}"
            )
        count, times = float(m.group(1)), float(m.group(2) or 1)
        period = times * _PERIODS[m.group(3)]
        if count <= 0 or period <= 0:
            raise ConfigError(f"{field}: must be more than 0 per period, got {value!r}")
        per_second = count / period
        if per_second > MAX_PER_SECOND:
            raise ConfigError(
                f"{field}: must be at most {MAX_PER_SECOND:g} per second, got {value!r}"
            )
        default = max(1.0, per_second)
        return cls(per_second, default if burst is None else _burst(burst, field))

    def __str__(self) -> str:
        return f"{format_per_second(self.per_second)} (burst {self.burst:g})"


def _burst(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{field}: burst must be a number of units, got {value!r}")
    return float(value)


def format_per_second(per_second: float) -> str:
    """``50/s``, ``10/min`` or ``2/h``: the shortest unit with a count of at least 1."""
    for unit, size in (("s", 1.0), ("min", 60.0), ("h", 3600.0)):
        if per_second * size >= 1:
            return f"{per_second * size:g}/{unit}"
    return f"{per_second * 86400:g}/d"


def as_rate(value: Rate | str | None, *, field: str) -> Rate | None:
    return None if value is None else Rate.parse(value, field=field)


@dataclass(frozen=True)
class Rates:
    """The rate limits one task or queue declares: as a whole, for each partition key,
    and for some keys of their own."""

    whole: Rate | None = None
    each_key: Rate | None = None
    keys: Mapping[str, Rate] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        rate: Rate | str | None,
        rate_per_key: Rate | str | None,
        rate_keys: Mapping[str, Rate | str] | None,
    ) -> Rates:
        keys = {}
        for key, value in (rate_keys or {}).items():
            if not isinstance(key, str):
                raise ConfigError(f"rate_keys: keys must be partition keys (str), got {key!r}")
            keys[key] = Rate.parse(value, field=f"rate_keys[{key!r}]")
        return cls(as_rate(rate, field="rate"), as_rate(rate_per_key, field="rate_per_key"), keys)

    def __bool__(self) -> bool:
        return self.whole is not None or self.each_key is not None or bool(self.keys)

    def rows(self) -> list[tuple[str, str, float, float]]:
        """(kind, key, per_second, burst) of each declared limit, as rate_limits has them."""
        out = []
        if self.whole is not None:
            out.append(("all", "", self.whole.per_second, self.whole.burst))
        if self.each_key is not None:
            out.append(("each", "", self.each_key.per_second, self.each_key.burst))
        for key, r in sorted(self.keys.items()):
            out.append(("key", key, r.per_second, r.burst))
        return out

    def burst_for(self, key: str) -> float | None:
        """The smallest burst a task of ``key`` must fit in, or None under no rate."""
        key_rate = self.keys.get(key, self.each_key)
        bursts = [r.burst for r in (self.whole, key_rate) if r is not None]
        return min(bursts) if bursts else None


def check_cost(cost: object, *, name: str, rates: Rates, key: str) -> int:
    """``cost`` if it is a whole number of units that fits in every burst of ``rates``
    for ``key``; else a ConfigError that says what to change."""
    if isinstance(cost, bool) or not isinstance(cost, int):
        raise ConfigError(f"{name}: cost must be a whole number of units, got {cost!r}")
    if not 1 <= cost <= MAX_COST:
        raise ConfigError(f"{name}: cost must be between 1 and {MAX_COST:,}, got {cost}")
    burst = rates.burst_for(key)
    if burst is not None and cost > burst:
        raise ConfigError(
            f"{name}: cost {cost} is above the burst of its rate limit ({burst:g}): "
            "raise the burst or split the task"
        )
    return cost
