"""The worker's settings: one frozen object, validated once, errors naming the field.

Sizing: ``concurrency`` (tasks at once: threads for ``def`` tasks, the event loop for
``async def`` ones) defaults to ``DEFAULT_CONCURRENCY`` whatever the machine, since
such tasks mostly wait. Tasks declared ``isolation="process"`` use the CPU, so
their processes at once (``process_slots``) default to the cores this process may
use (its CPU affinity, within its cgroup's CPU quota), divided across the worker
processes of a ``--processes`` pool, at least one and at most ``concurrency``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

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
DEFAULT_LOG_SUMMARY = timedelta(seconds=15)
MIN_LOG_SUMMARY = timedelta(seconds=1)
MAX_LOG_SUMMARY = timedelta(days=1)
_CGROUP = Path("/sys/fs/cgroup")


def available_cores() -> int:
    """CPU cores this process may run on: its affinity mask (``os.cpu_count()`` where
    there is none), within the CPU quota of its cgroup (a container's CPU limit)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def _cgroup_cpu_quota() -> float | None:
    """The tightest CPU quota in cores over this process's cgroup v2 ``cpu.max`` and its
    parents', or a cgroup v1 ``cpu.cfs_quota_us``; None where there is no limit."""
    quotas = [_quota(*_read(_CGROUP / "cpu" / name for name in _V1).split())]
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    if own is not None:
        path = _CGROUP / own.strip("/")
        for where in [path, *path.parents]:
            quotas.append(_quota(*_read([where / "cpu.max"]).split()))
            if where == _CGROUP:
                break
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


_V1 = ("cpu.cfs_quota_us", "cpu.cfs_period_us")


def _read(paths: Iterable[Path]) -> str:
    try:
        return " ".join(p.read_text().strip() for p in paths)
    except OSError:
        return ""


def _quota(limit: str = "max", period: str = "", *_: str) -> float | None:
    """``limit / period`` in cores; None for no limit ("max", or v1's -1) or nonsense."""
    try:
        cores = int(limit) / int(period)
    except (ValueError, ZeroDivisionError):
        return None
    return cores if cores > 0 else None


def default_process_slots(concurrency: int, processes: int = 1) -> int:
    """Task processes one worker runs at once unless told: the available cores shared
    among ``processes`` worker processes, at least 1, at most ``concurrency``."""
    return max(1, min(concurrency, available_cores() // max(1, processes)))


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker process runs.

    ``heartbeat`` defaults to a third of ``lease``; the reaper runs at the same
    interval, so a dead worker's task is taken over within about
    ``lease + heartbeat``. ``prefetch`` tasks are claimed ahead of free slots to keep
    them full; what is prefetched is handed back when it has waited through a heartbeat
    interval while another worker sits idle.
    ``process_slots`` caps the task processes of ``isolation="process"`` tasks
    running at once (default: :func:`default_process_slots`); such a task takes one
    of the ``concurrency`` slots too, and waits in it for a process slot.
    ``log_summary`` is how often a busy worker logs its ``tasks_summary`` line.
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
    process_slots: int | None = None
    log_summary: timedelta = DEFAULT_LOG_SUMMARY

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
        if self.process_slots is not None and not 1 <= self.process_slots <= self.concurrency:
            raise ConfigError(
                f"process_slots: must be between 1 and the concurrency ({self.concurrency}), "
                f"got {self.process_slots}; a process task also takes a concurrency slot, "
                "so raise --concurrency with it"
            )
        check_range(
            self.log_summary, field="log_summary", minimum=MIN_LOG_SUMMARY, maximum=MAX_LOG_SUMMARY
        )
        if self.prefetch is not None and not 0 <= self.prefetch <= MAX_CONCURRENCY:
            raise ConfigError(
                f"prefetch: must be between 0 and {MAX_CONCURRENCY}, got {self.prefetch}"
            )

    @property
    def prefetch_count(self) -> int:
        """Tasks claimed ahead of free slots (default: a quarter of the concurrency)."""
        return self.prefetch if self.prefetch is not None else self.concurrency // 4

    @property
    def process_slot_count(self) -> int:
        """Task processes at once: ``process_slots``, else sized to this machine."""
        if self.process_slots is not None:
            return self.process_slots
        return default_process_slots(self.concurrency)

    @property
    def heartbeat_interval(self) -> timedelta:
        return self.heartbeat if self.heartbeat is not None else self.lease / 3
