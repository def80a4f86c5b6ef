"""What one worker process holds: the attempts it owns, from claim until the outcome is written.

Rules:
- :class:`Holdings` changes only through its methods, and only the claim loop calls
  the ones that change it (:class:`~tenure._worker.claim_loop.ClaimLoop` and its
  outcome writer, :class:`~tenure._worker.completer.Outcomes`); the heartbeat, the
  cancel hints and the observers read it.
- The running and waiting counts are kept up to date as attempts change, since the
  claim loop asks for them after every task.
"""

from __future__ import annotations

from collections.abc import Collection
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from tenure._store.worker_rows import Claimed
from tenure.context import TaskContext


@dataclass
class Held:
    """An attempt this worker holds a lease on, from claim until its outcome is written.

    ``started`` and ``outcome_pending`` change only through :class:`Holdings`, which
    keeps the counts of running and waiting attempts as they change.
    """

    claimed: Claimed
    context: TaskContext
    started: bool = False  # False while prefetched: claimed but not yet running
    outcome_pending: bool = False  # its outcome waits to be written
    thread: Future[Any] | None = None  # the pool job of a sync task while it runs

    def set_thread(self, job: Future[Any]) -> None:
        self.thread = job


class Holdings:
    """The held attempts by task id."""

    def __init__(self) -> None:
        self._held: dict[int, Held] = {}
        # Tasks whose attempts were given up while self-fenced and whose rows may still
        # name this worker, until the reaper expires them.
        self._surrendered: set[int] = set()
        self._running = 0
        self._open = 0  # held, outcome not yet known

    # -- reading -------------------------------------------------------------------

    def get(self, task_id: int) -> Held | None:
        return self._held.get(task_id)

    def holds(self, task_id: int, attempt: int) -> Held | None:
        """The held attempt ``attempt`` of ``task_id``, or None."""
        held = self._held.get(task_id)
        return held if held is not None and held.claimed.attempt == attempt else None

    def __len__(self) -> int:
        return len(self._held)

    def running(self) -> int:
        """Attempts whose function is running now."""
        return self._running

    def waiting_or_running(self) -> int:
        """Attempts that occupy a slot or wait for one (held, outcome not yet known)."""
        return self._open

    def snapshot(self) -> dict[int, int]:
        """Task id to attempt for every lease this worker holds."""
        return {tid: h.claimed.attempt for tid, h in self._held.items()}

    def surrendered(self) -> frozenset[int]:
        return frozenset(self._surrendered)

    # -- changing (the claim loop only) -----------------------------------------------

    def claimed(self, held: Held) -> None:
        """A newly claimed attempt; it replaces an older attempt of the same task."""
        older = self._held.get(held.claimed.id)
        if older is not None:
            self.settled(held.claimed.id, older.claimed.attempt)
        self._surrendered.discard(held.claimed.id)
        self._held[held.claimed.id] = held
        self._open += 1

    def started(self, held: Held) -> None:
        """The attempt's function begins to run."""
        if not held.started and not held.outcome_pending:
            self._running += 1
        held.started = True

    def outcome_known(self, held: Held) -> None:
        """The attempt's outcome is known and waits to be written: its slot is free."""
        if not held.outcome_pending:
            self._open -= 1
            if held.started:
                self._running -= 1
        held.outcome_pending = True

    def settled(self, task_id: int, attempt: int) -> Held | None:
        """The attempt's outcome was written (or fenced out): it is no longer held."""
        held = self.holds(task_id, attempt)
        if held is not None:
            del self._held[task_id]
            self.outcome_known(held)
        return held

    def lose(self, task_id: int, attempt: int, *, surrender: bool = False) -> Held | None:
        """Another owner may hold the attempt now; with ``surrender``, its row may go on
        naming this worker until the reaper expires it (so it is not handed back as
        never received)."""
        held = self.settled(task_id, attempt)
        if held is not None and surrender:
            self._surrendered.add(task_id)
        return held

    def keep_surrendered(self, kept: Collection[int]) -> None:
        """Of the surrendered tasks, only ``kept`` still name this worker."""
        self._surrendered.intersection_update(kept)
