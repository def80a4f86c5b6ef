"""Outcomes: the claim loop's pending outcomes, and how they are written, every write fenced.

Rules:
- Only the claim loop holds an :class:`Outcomes` and calls it, from its own task: it
  hands a batch to its next claim (one statement records the outcomes, then claims),
  or, when no claim is due (no free slot, no work, claims failing, a drain), has it
  written alone with :meth:`Outcomes.write`. No lock: nothing else writes outcomes.
- Each outcome is fenced on (task, attempt, owner) in the database: one for an
  attempt this worker no longer owns changes nothing, is logged as ``lease_lost`` and
  counted.
- A write that fails leaves the batch pending and marks it *uncertain*: it may have
  committed before its answer was lost. An uncertain batch is written alone, never
  carried by a claim, and what the answer lacks is looked up (``attempts_recorded``):
  an attempt this worker already recorded is done, not fenced.
- Outcomes always land. A batch the database refuses (judged by SQLSTATE: anything
  but a lost connection, a serialization failure, a deadlock or a server shutting
  down), or that fails ``SPLIT_AFTER`` times in a row for any reason, is written one
  outcome at a time, so one bad outcome cannot hold the others back; an outcome that
  cannot be written as it is is replaced by an error outcome that says why. Failed
  writes back off; while outcomes wait longer than a lease without progress,
  ``/readyz`` answers 503.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Sequence
from uuid import UUID

from tenure._db.connect import backoff_delay, connection_lost, describe, is_transient
from tenure._store.worker import AsyncStore
from tenure._store.worker_rows import Outcome, Settled
from tenure._worker.clock import MONOTONIC, Clock
from tenure._worker.metrics import Metrics
from tenure._worker.service import Streak
from tenure._worker.state import Holdings
from tenure._worker.tasklog import TaskLog
from tenure.errors import DatabaseError
from tenure.limits import clean_text
from tenure.states import VERDICT_EVENTS, Reported, Verdict

log = logging.getLogger(__name__)

MAX_BATCH = 500
SPLIT_AFTER = 3  # failed tries of one batch, transient or not, before it is split
REPLACED_ERROR_CHARS = 500


class Outcomes:
    """Outcomes finished here and not yet written, oldest first."""

    def __init__(
        self,
        store: AsyncStore,
        holdings: Holdings,
        events: Counter[str],
        worker_id: UUID,
        metrics: Metrics,
        tasklog: TaskLog,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.store = store
        self.holdings = holdings
        self.events = events
        self.worker_id = worker_id
        self.metrics = metrics
        self.tasklog = tasklog
        self.clock = clock
        self._pending: list[Outcome] = []
        self.slowing: list[Outcome] = []  # asked to slow their rate limits, not yet done
        self._keys: set[tuple[int, int]] = set()  # (task, attempt) of each pending outcome
        self.uncertain = False  # the last write failed: it may have committed anyway
        self.failures = 0  # failed writes in a row
        self.streak = Streak("completer", clock)
        self.retry_at = -math.inf  # no write before this time (after a failure)
        self.last_error: str | None = None  # why the last write failed, until one succeeds
        self._progress_at = clock.now()  # last write that settled outcomes
        self.idle = asyncio.Event()  # set while nothing is pending
        self.idle.set()

    def __len__(self) -> int:
        return len(self._pending)

    def stalled_for(self) -> float:
        """Seconds outcomes have waited with no write settling any (0 when none wait)."""
        if not self._pending:
            return 0.0
        return self.clock.now() - self._progress_at

    def add(self, outcome: Outcome) -> None:
        """Queue an outcome; a second outcome for the same attempt is ignored."""
        key = (outcome.task_id, outcome.attempt)
        if key in self._keys:
            log.debug("duplicate outcome ignored task=%s attempt=%s", *key)
            return
        self._keys.add(key)
        if not self._pending:
            self._progress_at = self.clock.now()
        held = self.holdings.holds(*key)
        if held is not None:
            self.holdings.outcome_known(held)
        self._pending.append(outcome)
        if outcome.slow is not None:
            self.slowing.append(outcome)
        self.idle.clear()

    async def slow_down(self) -> None:
        """Slow the rate limits that outcomes asked to slow (a task told "429"), before
        their outcomes are written. Advisory: a failure is logged and the request
        dropped, and never holds an outcome back."""
        asked, self.slowing = self.slowing, []
        try:
            slowed = await self.store.rate_slow_down(asked)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "rate_slow_down_failed tasks=%s error=%s: the rates stay as they were",
                ",".join(str(o.task_id) for o in asked),
                clean_text(describe(exc))[:REPLACED_ERROR_CHARS],
            )
            return
        log.info(
            "rate_slowed tasks=%s buckets=%d share=%g for=%gs",
            ",".join(str(o.task_id) for o in asked),
            slowed,
            min(o.slow[0] for o in asked if o.slow is not None),
            max(o.slow[1] for o in asked if o.slow is not None),
        )

    def batch_for_claim(self) -> list[Outcome]:
        """The batch the next claim may write in its statement (empty while uncertain
        or backing off: those are written alone)."""
        if self.uncertain or self.clock.now() < self.retry_at:
            return []
        return self._pending[:MAX_BATCH]

    def answer_lost(self) -> None:
        """The claim that carried the head batch failed: it may have committed."""
        self.uncertain = True

    def settle(self, n: int, verdicts: Sequence[Settled]) -> int:
        """Settle the first ``n`` pending outcomes, written with these verdicts."""
        return self._settle(n, {v.task_id: v.verdict for v in verdicts})

    async def write(self) -> int:
        """Write the head batch alone; returns the outcomes settled. A failure is
        logged and backs the next write off; it never raises."""
        try:
            settled = await self._write_head()
            self.failures = 0
            self.streak.ok()
            return settled
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failures += 1
            error: Exception = exc
            self.uncertain = True  # a lost answer may hide a commit
            if self.failures >= SPLIT_AFTER or not is_transient(exc):
                # Refused, or failing again and again: find the outcome at fault by
                # writing them one by one.
                before = len(self._pending)
                try:
                    await self._write_singly()
                    self.failures = 0
                    self.streak.ok()
                    return before - len(self._pending)
                except asyncio.CancelledError:
                    raise
                except Exception as again:
                    error = again
        self.last_error = clean_text(describe(error))[:REPLACED_ERROR_CHARS]
        self.streak.failed(f"pending={len(self._pending)} error={self.last_error}")
        self.retry_at = self.clock.now() + backoff_delay(self.failures, base=0.05, cap=2.0)
        return 0

    async def _write_head(self) -> int:
        batch = self._pending[:MAX_BATCH]
        if not batch:
            return 0
        verdicts = await self._write_checked(batch)
        self.uncertain = False
        return self._settle(len(batch), verdicts)

    async def _write_checked(self, batch: list[Outcome]) -> dict[int, Verdict]:
        written = await self.store.complete(worker=self.worker_id, outcomes=batch)
        verdicts = {v.task_id: v.verdict for v in written}
        if self.uncertain:
            # An earlier try of these outcomes may have committed before its answer
            # was lost: what this worker already recorded is done, not fenced.
            missing = {o.task_id: o.attempt for o in batch if o.task_id not in verdicts}
            if missing:
                recorded = await self.store.attempts_recorded(
                    worker=self.worker_id, attempts=missing
                )
                verdicts.update(dict.fromkeys(recorded, Verdict.RECORDED))
        return verdicts

    def _settle(self, n: int, verdicts: dict[int, Verdict], dropped: bool = False) -> int:
        batch = self._pending[:n]
        del self._pending[:n]
        self._progress_at = self.clock.now()
        self.last_error = None
        self.retry_at = -math.inf
        events, keys, settled = self.events, self._keys, self.holdings.settled
        for o in batch:
            keys.discard((o.task_id, o.attempt))
            held = settled(o.task_id, o.attempt)
            verdict = verdicts.get(o.task_id)
            if verdict is None and dropped:
                events["outcomes_dropped"] += 1
                continue
            if verdict is None:
                events["lease_lost"] += 1
                events["fenced_writes"] += 1
                log.warning(
                    "lease_lost task=%s attempt=%s worker=%s outcome=%s: write fenced out, "
                    "another owner took over",
                    o.task_id,
                    o.attempt,
                    self.worker_id,
                    o.outcome,
                )
                continue
            event = VERDICT_EVENTS[verdict]
            events[event] += 1
            self.metrics.settled(event, held)
            self.tasklog.settled(event, o, held)
        if not self._pending:
            self.idle.set()
        return len(batch)

    async def _write_singly(self) -> None:
        """Write the head batch one outcome at a time; one that cannot be written as
        it is becomes an error outcome that says why, and one that conflicts with
        another transaction (a serialization failure, a deadlock, a lock it could
        not get) waits at the back. Raises when the database is away, and after the
        pass when some outcome had to wait, so the loop backs off."""
        waited: DatabaseError | None = None
        for outcome in list(self._pending[:MAX_BATCH]):
            try:
                verdicts = await self._write_checked([outcome])
            except DatabaseError as exc:
                if is_transient(exc):
                    if connection_lost(exc):
                        raise
                    self._pending.append(self._pending.pop(0))
                    waited = exc
                    continue
                replacement = _replacement(outcome, exc)
                log.error(
                    "outcome_unwritable task=%s attempt=%s error=%s; recording %s instead",
                    outcome.task_id,
                    outcome.attempt,
                    clean_text(describe(exc))[:REPLACED_ERROR_CHARS],
                    replacement.outcome,
                )
                self._pending[0] = replacement
                self.events["outcomes_replaced"] += 1
                try:
                    verdicts = await self._write_checked([replacement])
                except DatabaseError as again:
                    if is_transient(again):
                        raise
                    # Not a takeover: the database refuses both. The lease will expire
                    # and the reaper will count a crash.
                    log.error("outcome_dropped task=%s: %s", outcome.task_id, again)
                    self._settle(1, {}, dropped=True)
                    continue
            self._settle(1, verdicts)
        if waited is not None:
            raise waited
        self.uncertain = False


def _replacement(outcome: Outcome, exc: BaseException) -> Outcome:
    """The outcome to record for one the database refused: the task's result is
    dropped and the reason is given instead. A success that cannot be stored fails
    for good (running it again returns the same); an error keeps its retry delay."""
    why = clean_text(describe(exc.__cause__ or exc))[:REPLACED_ERROR_CHARS]
    kind = {Reported.SUCCEEDED: Reported.DISCARDED, Reported.TIMED_OUT: Reported.ERROR}.get(
        outcome.outcome, outcome.outcome
    )
    return Outcome(
        outcome.task_id,
        outcome.attempt,
        kind,
        error=f"the task's {outcome.outcome} outcome could not be recorded: {why}",
        delay=max(outcome.delay, 1.0),
    )
