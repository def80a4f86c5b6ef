"""Task options and retry backoff, validated once with errors that name the field."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from tenure._durations import as_timedelta, check_range, exponential, positive
from tenure._worker.config import MAX_LEASE, MIN_LEASE
from tenure.errors import ConfigError
from tenure.rates import Cost, Rate, Rates, check_cost

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_MAX_CRASHES = 3
DEFAULT_BACKOFF_BASE = timedelta(seconds=1)
DEFAULT_BACKOFF_CAP = timedelta(minutes=10)
ISOLATIONS = ("thread", "process")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter between error retries.

    The n-th retry waits ``min(cap, base * factor ** (n - 1))``, scaled by a random
    factor in ``[1 - jitter, 1 + jitter]``.

    >>> Backoff(base=timedelta(seconds=2), cap=timedelta(minutes=5))  # doctest: +SKIP
    """

    base: timedelta = DEFAULT_BACKOFF_BASE
    cap: timedelta = DEFAULT_BACKOFF_CAP
    factor: float = 2.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.base < timedelta(0):
            raise ConfigError("backoff.base: must not be negative")
        if self.cap < self.base:
            raise ConfigError("backoff.cap: must be at least backoff.base")
        if self.factor < 1:
            raise ConfigError("backoff.factor: must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ConfigError("backoff.jitter: must be between 0 and 1")

    def delay(self, errors: int) -> timedelta:
        """The wait before the retry that follows the ``errors``-th error."""
        seconds = exponential(
            max(1, errors), base=self.base.total_seconds(), cap=self.cap.total_seconds(),
            factor=self.factor,
        )  # fmt: skip
        seconds *= random.uniform(1 - self.jitter, 1 + self.jitter)
        return timedelta(seconds=max(0.0, seconds))


def as_backoff(value: Backoff | timedelta | float | int | None) -> Backoff:
    """A :class:`Backoff` from a Backoff, or a base delay as timedelta or seconds."""
    if value is None:
        return Backoff()
    if isinstance(value, Backoff):
        return value
    base = as_timedelta(value, field="backoff")
    assert base is not None
    return Backoff(base=base, cap=max(base, DEFAULT_BACKOFF_CAP))


@dataclass(frozen=True)
class TaskOptions:
    """Everything ``@reg.task(...)`` accepts, validated."""

    name: str
    queue: str = DEFAULT_QUEUE
    max_concurrency: int | None = None
    max_concurrency_per_key: int | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_crashes: int = DEFAULT_MAX_CRASHES
    backoff: Backoff = field(default_factory=Backoff)
    timeout: timedelta | None = None
    lease: timedelta | None = None
    priority: int = 0
    isolation: str = "thread"
    rates: Rates = field(default_factory=Rates)
    cost: Cost = 1  # rate units each start spends, or a function of the payload

    def __post_init__(self) -> None:
        if not callable(self.cost):
            check_cost(self.cost, name=self.name or "cost", rates=self.rates, key="")
        if not self.name:
            raise ConfigError("name: must not be empty")
        if self.isolation not in ISOLATIONS:
            raise ConfigError(
                f"isolation: must be one of {', '.join(ISOLATIONS)}, got {self.isolation!r}"
            )
        if not self.queue:
            raise ConfigError("queue: must not be empty")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ConfigError(f"max_concurrency: must be at least 1, got {self.max_concurrency}")
        if self.max_concurrency_per_key is not None and self.max_concurrency_per_key < 1:
            raise ConfigError(
                f"max_concurrency_per_key: must be at least 1, got {self.max_concurrency_per_key}"
            )
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts: must be at least 1, got {self.max_attempts}")
        if self.max_crashes < 1:
            raise ConfigError(f"max_crashes: must be at least 1, got {self.max_crashes}")
        if self.lease is not None:
            check_range(self.lease, field="lease", minimum=MIN_LEASE, maximum=MAX_LEASE)
        if self.timeout is not None and self.timeout <= timedelta(0):
            raise ConfigError(f"timeout: must be greater than zero, got {self.timeout}")

    @property
    def limited(self) -> bool:
        """Whether claims of this task go through the limit buckets (a concurrency
        limit or a rate): its rows are sent flagged, into the index of limited work."""
        concurrency = self.max_concurrency is not None or self.max_concurrency_per_key is not None
        return concurrency or bool(self.rates)

    @classmethod
    def build(
        cls,
        *,
        name: str,
        queue: str,
        max_concurrency: int | None,
        max_concurrency_per_key: int | None,
        max_attempts: int,
        max_crashes: int,
        backoff: Backoff | timedelta | float | int | None,
        timeout: timedelta | float | int | str | None,
        lease: timedelta | float | int | str | None,
        priority: int,
        isolation: str = "thread",
        rate: Rate | str | None = None,
        rate_per_key: Rate | str | None = None,
        rate_keys: Mapping[str, Rate | str] | None = None,
        cost: Cost = 1,
    ) -> TaskOptions:
        return cls(
            name=name,
            queue=queue,
            max_concurrency=max_concurrency,
            max_concurrency_per_key=max_concurrency_per_key,
            max_attempts=max_attempts,
            max_crashes=max_crashes,
            backoff=as_backoff(backoff),
            timeout=None if timeout is None else positive(timeout, field="timeout"),
            lease=None if lease is None else positive(lease, field="lease"),
            priority=priority,
            isolation=isolation,
            rates=Rates.build(rate, rate_per_key, rate_keys),
            cost=cost,
        )


@dataclass(frozen=True)
class QueueOptions:
    """What ``reg.queue(...)`` declares about a queue, validated.

    ``weight`` sets the queue's share when a worker serves several queues;
    ``max_concurrency`` caps running attempts in the queue fleet-wide;
    ``max_concurrency_per_key`` caps them per partition key; ``key_weights`` gives
    some partition keys a larger share of the queue (default weight 1); ``rates``
    limits starts in the queue (:mod:`tenure.rates`).
    """

    name: str
    weight: int = 1
    max_concurrency: int | None = None
    max_concurrency_per_key: int | None = None
    key_weights: dict[str, float] = field(default_factory=dict)
    rates: Rates = field(default_factory=Rates)

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("queue: name must not be empty")
        if self.weight < 1:
            raise ConfigError(f"weight: must be at least 1, got {self.weight}")
        for fname in ("max_concurrency", "max_concurrency_per_key"):
            value = getattr(self, fname)
            if value is not None and value < 1:
                raise ConfigError(f"{fname}: must be at least 1, got {value}")
        for key, w in self.key_weights.items():
            if not w > 0:
                raise ConfigError(f"key_weights: weight of {key!r} must be greater than 0")
