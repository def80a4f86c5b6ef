"""The worker's settings: one frozen object, validated once, errors naming the field."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from tenure._durations import check_range
from tenure.errors import ConfigError

DEFAULT_CONCURRENCY = 8
DEFAULT_LEASE = timedelta(seconds=15)
DEFAULT_POLL_INTERVAL = timedelta(seconds=1)
DEFAULT_DRAIN_TIMEOUT = timedelta(seconds=30)
MIN_LEASE = timedelta(seconds=1)
MAX_LEASE = timedelta(days=1)  # a dead worker's task waits up to a lease to be taken over
MIN_POLL_INTERVAL = timedelta(milliseconds=10)  # below it an idle worker only spins
MAX_POLL_INTERVAL = timedelta(hours=1)
MAX_DRAIN_TIMEOUT = timedelta(days=1)
MAX_CONCURRENCY = 10_000


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker process runs.

    ``heartbeat`` defaults to a third of ``lease``; the reaper runs at the same
    interval, so a dead worker's task is taken over within about
    ``lease + heartbeat``. ``prefetch`` tasks are claimed ahead of free slots to keep
    them full; what is prefetched is handed back when another worker sits idle.
    """

    queues: tuple[str, ...]
    concurrency: int = DEFAULT_CONCURRENCY
    lease: timedelta = DEFAULT_LEASE
    heartbeat: timedelta | None = None
    poll_interval: timedelta = DEFAULT_POLL_INTERVAL
    drain_timeout: timedelta = DEFAULT_DRAIN_TIMEOUT
    listen: bool = True
    prefetch: int | None = None
    max_memory_per_child: int | None = None  # bytes; task processes past it are replaced

    def __post_init__(self) -> None:
        if not self.queues:
            raise ConfigError("queues: the worker serves no queue; pass --queues or register tasks")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigError(
                f"concurrency: must be between 1 and {MAX_CONCURRENCY}, got {self.concurrency}"
            )
        check_range(self.lease, field="lease", minimum=MIN_LEASE, maximum=MAX_LEASE)
        if self.heartbeat is not None and not timedelta(0) < self.heartbeat < self.lease:
            raise ConfigError("heartbeat: must be greater than zero and shorter than the lease")
        check_range(
            self.poll_interval,
            field="poll_interval",
            minimum=MIN_POLL_INTERVAL,
            maximum=MAX_POLL_INTERVAL,
        )
        check_range(
            self.drain_timeout,
            field="drain_timeout",
            minimum=timedelta(0),
            maximum=MAX_DRAIN_TIMEOUT,
        )
        if self.max_memory_per_child is not None and self.max_memory_per_child < 16 * 2**20:
            raise ConfigError("max_memory_per_child: must be at least 16MB")
        if self.prefetch is not None and not 0 <= self.prefetch <= MAX_CONCURRENCY:
            raise ConfigError(
                f"prefetch: must be between 0 and {MAX_CONCURRENCY}, got {self.prefetch}"
            )

    @property
    def prefetch_count(self) -> int:
        """Tasks claimed ahead of free slots (default: a quarter of the concurrency)."""
        return self.prefetch if self.prefetch is not None else self.concurrency // 4

    @property
    def heartbeat_interval(self) -> timedelta:
        return self.heartbeat if self.heartbeat is not None else self.lease / 3
