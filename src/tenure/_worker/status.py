"""A snapshot of one worker, for the parts that watch it: metrics, health, the task log.

Rules:
- Observers read a :class:`WorkerStatus` and nothing else of the worker: they never
  see the worker object, its parts or their private fields, so none of them imports
  the worker module.
- A snapshot is taken in one go, on the event loop, so its fields agree with each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkerStatus:
    """What one worker is doing, as of the moment the snapshot was taken."""

    started: bool = False  # registered and claiming (or drained since)
    draining: bool = False
    fenced: bool = False  # cut itself off: no renewal succeeded for most of a lease
    lease: float = 0.0  # seconds
    heartbeat_lag: float = 0.0  # seconds since the last successful renewal was sent
    leases_held: int = 0  # running or prefetched
    running: int = 0
    prefetched: int = 0
    outcomes_pending: int = 0
    outcomes_stalled: float = 0.0  # seconds outcomes waited with no write settling any
    outcomes_error: str | None = None  # why the last write of outcomes failed
    events: Mapping[str, int] = field(default_factory=dict)  # event name -> times
    takeovers: int = 0  # expired leases this worker's reaper turned back into work
    quarantined: int = 0  # tasks its reaper quarantined
    schedule_ticks: Mapping[str, int] = field(default_factory=dict)  # outcome -> ticks

    def readiness(self) -> tuple[bool, str]:
        """Whether the worker takes work now, and why not: starting, draining,
        self-fenced, or finished outcomes it has not written for longer than a lease."""
        if not self.started:
            return False, "starting"
        if self.draining:
            return False, "draining"
        if self.fenced:
            return False, "self-fenced"
        if self.outcomes_stalled > self.lease:
            why = f": {self.outcomes_error}" if self.outcomes_error else ""
            return False, f"outcomes unwritten for {self.outcomes_stalled:.0f}s{why}"
        return True, "ready"
