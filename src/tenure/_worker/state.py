"""What one worker process holds: the attempts it owns and its counters."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from tenure.context import TaskContext


@dataclass(frozen=True)
class Claimed:
    """A row the claimer handed over: this worker now holds its lease."""

    id: int
    task_name: str
    queue: str
    payload: Any
    attempt: int
    errors: int
    crashes: int


@dataclass
class Held:
    """An attempt this worker holds a lease on, from claim until its outcome is written."""

    claimed: Claimed
    context: TaskContext
    started: bool = False  # False while prefetched: claimed but not yet running
    completing: bool = False  # outcome handed to the completer, not yet written
    thread: Future[Any] | None = None  # the pool job of a sync task while it runs


@dataclass
class Holdings:
    """The held attempts by task id, plus event counters (names match the log events)."""

    held: dict[int, Held] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)

    def running(self) -> int:
        """Attempts whose function is running now."""
        return sum(1 for h in self.held.values() if h.started and not h.completing)

    def waiting_or_running(self) -> int:
        """Attempts that occupy a slot or wait for one (held, outcome not yet known)."""
        return sum(1 for h in self.held.values() if not h.completing)

    def snapshot(self) -> dict[int, int]:
        """Task id to attempt for every lease this worker holds."""
        return {tid: h.claimed.attempt for tid, h in self.held.items()}

    def drop(self, task_id: int, attempt: int) -> Held | None:
        held = self.held.get(task_id)
        if held is not None and held.claimed.attempt == attempt:
            del self.held[task_id]
            return held
        return None
