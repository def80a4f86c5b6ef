"""What one worker process holds: the attempts it owns and its counters."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tenure.context import TaskContext


class Claimed(NamedTuple):
    """A row the claimer handed over: this worker now holds its lease."""

    id: int
    task_name: str
    queue: str
    payload: str  # JSON text: the task's type parses and validates it in one pass
    attempt: int
    errors: int
    crashes: int


@dataclass
class Held:
    """An attempt this worker holds a lease on, from claim until its outcome is written.

    ``started`` and ``completing`` change only through :class:`Holdings`, which keeps
    the counts of running and waiting attempts as they change.
    """

    claimed: Claimed
    context: TaskContext
    started: bool = False  # False while prefetched: claimed but not yet running
    completing: bool = False  # outcome handed to the completer, not yet written
    thread: Future[Any] | None = None  # the pool job of a sync task while it runs

    def set_thread(self, job: Future[Any]) -> None:
        self.thread = job


@dataclass
class Holdings:
    """The held attempts by task id, plus event counters (names match the log events).

    The claim loop asks for the running and waiting counts after every task, so they
    are kept up to date rather than counted over ``held``.
    """

    held: dict[int, Held] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    # Tasks whose attempts were given up while self-fenced and whose rows may still
    # name this worker, until the reaper expires them.
    surrendered: set[int] = field(default_factory=set)
    _running: int = 0
    _open: int = 0  # held and outcome not yet handed over

    def add(self, held: Held) -> None:
        """A newly claimed attempt; it replaces an older attempt of the same task."""
        older = self.held.get(held.claimed.id)
        if older is not None:
            self.drop(held.claimed.id, older.claimed.attempt)
        self.surrendered.discard(held.claimed.id)
        self.held[held.claimed.id] = held
        self._open += 1

    def start(self, held: Held) -> None:
        """The attempt's function begins to run."""
        if not held.started and not held.completing:
            self._running += 1
        held.started = True

    def complete(self, held: Held) -> None:
        """The attempt's outcome has been handed to the completer."""
        if not held.completing:
            self._open -= 1
            if held.started:
                self._running -= 1
        held.completing = True

    def running(self) -> int:
        """Attempts whose function is running now."""
        return self._running

    def waiting_or_running(self) -> int:
        """Attempts that occupy a slot or wait for one (held, outcome not yet known)."""
        return self._open

    def snapshot(self) -> dict[int, int]:
        """Task id to attempt for every lease this worker holds."""
        return {tid: h.claimed.attempt for tid, h in self.held.items()}

    def surrender(self, task_id: int, attempt: int) -> Held | None:
        """Give up an attempt whose row may go on naming this worker until it expires."""
        held = self.drop(task_id, attempt)
        if held is not None:
            self.surrendered.add(task_id)
        return held

    def drop(self, task_id: int, attempt: int) -> Held | None:
        held = self.held.get(task_id)
        if held is not None and held.claimed.attempt == attempt:
            del self.held[task_id]
            self.complete(held)
            return held
        return None
