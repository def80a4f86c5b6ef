"""The rate limit rows the client, CLI, dashboard and metrics read (the rules of
:mod:`tenure._store.rows` hold: fields are the statement's column names)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from tenure.rates import format_per_second


@dataclass(frozen=True)
class RateRow:
    """One rate limit in force and its buckets now (``rates_list``)."""

    scope: str  # 'task' or 'queue'
    name: str
    kind: str  # 'all': the whole task or queue; 'each': every key; 'key': one key
    key: str
    per_second: float
    burst: float
    source: str  # 'code' or 'operator' (an operator's wins)
    code_per_second: float | None  # the code's, where an operator's overrides it
    code_burst: float | None
    buckets: int  # buckets written so far (one never spent from is full)
    tokens: float  # the fewest units any of its buckets holds now
    recent: float  # units its buckets spent per second of late (about 10 s)
    slowed_to: float  # the lowest share of its rate a task's request left (1: none)
    slowed_until: datetime | None
    held_at: datetime | None  # when it last held work back (within 5 s), else None
    held_queue: str | None  # and in which queue

    @property
    def limit(self) -> str:
        """``task x``, ``queue y, each key`` or ``task x, key k``."""
        where = f"{self.scope} {self.name}"
        if self.kind == "each":
            return f"{where}, each key"
        if self.kind == "key":
            return f"{where}, key {self.key}"
        return where

    @property
    def rate(self) -> str:
        return f"{format_per_second(self.per_second)} (burst {self.burst:g})"

    @property
    def recent_rate(self) -> str:
        """What its buckets spent of late, as a rate (``-`` below a hundredth a second)."""
        return format_per_second(self.recent) if self.recent >= 0.01 else "-"

    def slowed_left(self, now: datetime) -> float | None:
        """Seconds a task's slow-down still lasts at ``now``; None when not slowed."""
        if self.slowed_to >= 1 or self.slowed_until is None:
            return None
        return max((self.slowed_until - now).total_seconds(), 0.0)

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate}
