"""Completer: writes attempt outcomes in batches, every write fenced.

Outcomes queue up as tasks finish; one statement writes all of them. Each is fenced
on (task, attempt, owner) in the database: an outcome for an attempt this worker
no longer owns changes nothing, is logged as ``lease_lost`` and counted. A batch
that fails to reach the database stays queued and is tried again with backoff (the
heartbeat keeps those leases alive meanwhile); if the failed try had committed
after all, the retry finds the attempts already recorded and counts them done.

Outcomes always land. A batch the database refuses (judged by SQLSTATE: anything
but a lost connection, a serialization failure, a deadlock or a server shutting
down), or that fails ``SPLIT_AFTER`` times in a row for any reason, is written one
outcome at a time, so one bad outcome cannot hold the others back; an outcome that
cannot be written as it is is replaced by an error outcome that says why. While
outcomes wait longer than a lease without progress, :meth:`Completer.stalled_for`
says so, and ``/readyz`` answers 503.

While a worker claims, its claim loop carries the outcomes: a new outcome wakes that
loop (``carrier``), whose next claim writes the pending batch in the same statement
(``carried``), and which kicks this loop for outcomes it does not carry. Writes
take ``lock``, so a batch is written by one of the two, never both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NamedTuple
from uuid import UUID

from tenure._db import arrays
from tenure._db.connect import backoff_delay, connection_lost, describe, is_transient
from tenure._worker.link import Link
from tenure._worker.state import Held, Holdings
from tenure.errors import DatabaseError
from tenure.limits import clean_text

log = logging.getLogger(__name__)

MAX_BATCH = 500
SPLIT_AFTER = 3  # failed tries of one batch, transient or not, before it is split
REPLACED_ERROR_CHARS = 500


class Outcome(NamedTuple):
    """How one attempt ended, as the completer writes it."""

    task_id: int
    attempt: int
    outcome: str  # succeeded | error | timed_out | discarded | cancelled | released
    result: str | None = None  # JSON text
    error: str | None = None
    delay: float = 0.0  # seconds before a retry


def outcome_params(batch: list[Outcome]) -> dict[str, str]:
    """A batch of outcomes as the array parameters complete() takes."""
    return {
        "ids": arrays.ints(o.task_id for o in batch),
        "attempts": arrays.ints(o.attempt for o in batch),
        "outcomes": arrays.texts(o.outcome for o in batch),
        "results": arrays.texts(o.result for o in batch),
        "errors": arrays.texts(o.error for o in batch),
        "delays": arrays.floats(o.delay for o in batch),
    }


@dataclass(frozen=True)
class CompleteResult:
    verdicts: dict[int, str]
    fenced: list[int]


class Completer:
    name = "completer"

    def __init__(self, link: Link, holdings: Holdings, worker_id: UUID) -> None:
        self.link = link
        self.holdings = holdings
        self.worker_id = worker_id
        self.pending: list[Outcome] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._submitted: set[tuple[int, int]] = set()
        self._uncertain = False  # the last write failed: it may have committed anyway
        # Told each settled outcome's event, the outcome and the attempt it ended (None
        # if no longer held): the worker counts outcomes in its metrics and writes the
        # task lines of its log (a failure's reason among them) with it.
        self.on_settled: Callable[[str, Outcome, Held | None], None] | None = None
        # While set, a new outcome calls this instead of waking the completer's loop.
        self.carrier: Callable[[], None] | None = None
        self.lock = asyncio.Lock()
        self._progress_at = time.monotonic()  # last write that settled outcomes
        self.last_error: str | None = None  # why the last write failed, until one succeeds

    def stalled_for(self) -> float:
        """Seconds outcomes have waited with no write settling any (0 when none wait)."""
        if not self.pending:
            return 0.0
        return time.monotonic() - self._progress_at

    def waiting(self) -> tuple[int, float]:
        """How many outcomes wait, and :meth:`stalled_for`."""
        return len(self.pending), self.stalled_for()

    def submit(self, outcome: Outcome) -> None:
        """Queue an outcome; a second outcome for the same attempt is ignored."""
        key = (outcome.task_id, outcome.attempt)
        if key in self._submitted:
            log.debug("duplicate outcome ignored task=%s attempt=%s", *key)
            return
        self._submitted.add(key)
        if not self.pending:
            self._progress_at = time.monotonic()
        held = self.holdings.held.get(outcome.task_id)
        if held is not None and held.claimed.attempt == outcome.attempt:
            self.holdings.complete(held)
        self.pending.append(outcome)
        self._idle.clear()
        if self.carrier is None:
            self._wake.set()
        else:
            self.carrier()

    def kick(self) -> None:
        """Write what is pending now, on the completer's own loop."""
        if self.pending:
            self._wake.set()

    @asynccontextmanager
    async def carried(self) -> AsyncIterator[list[Outcome]]:
        """The pending batch for a claim to write in the same statement; settle it
        with :meth:`settle` inside the block. Empty while the completer is writing or
        after a failed write (the completer sorts out what that one recorded)."""
        if self.lock.locked() or self._uncertain or not self.pending:
            yield []
            return
        async with self.lock:
            batch = self.pending[:MAX_BATCH]
            try:
                yield batch
            except BaseException:
                self._uncertain = True  # it may have committed before its answer was lost
                self._wake.set()
                raise

    def settle(self, batch: list[Outcome], verdicts: dict[int, str]) -> CompleteResult:
        """Settle a batch written by :meth:`carried`'s holder."""
        return self._settle(len(batch), verdicts)

    async def _write(self, batch: list[Outcome]) -> dict[int, str]:
        rows = await self.link.fetch(
            "task_complete_many", {"worker": self.worker_id, **outcome_params(batch)}
        )
        return {int(r[0]): str(r[1]) for r in rows}

    async def run_once(self) -> CompleteResult:
        """Write up to MAX_BATCH pending outcomes in one statement."""
        batch = self.pending[:MAX_BATCH]
        if not batch:
            return CompleteResult({}, [])
        verdicts = await self._write_checked(batch)
        self._uncertain = False
        return self._settle(len(batch), verdicts)

    async def _write_checked(self, batch: list[Outcome]) -> dict[int, str]:
        verdicts = await self._write(batch)
        if self._uncertain:
            # An earlier try of these outcomes may have committed before its answer
            # was lost: what this worker already recorded is done, not fenced.
            missing = [o for o in batch if o.task_id not in verdicts]
            if missing:
                rows = await self.link.fetch(
                    "attempts_recorded",
                    {
                        "worker": self.worker_id,
                        "ids": [o.task_id for o in missing],
                        "attempts": [o.attempt for o in missing],
                    },
                )
                verdicts.update({int(r[0]): "recorded" for r in rows})
        return verdicts

    def _settle(self, n: int, verdicts: dict[int, str], dropped: bool = False) -> CompleteResult:
        batch = self.pending[:n]
        del self.pending[:n]
        self._progress_at = time.monotonic()
        self.last_error = None
        fenced: list[int] = []
        counts = self.holdings.counts
        submitted, drop, on_settled = self._submitted, self.holdings.drop, self.on_settled
        for o in batch:
            submitted.discard((o.task_id, o.attempt))
            held = drop(o.task_id, o.attempt)
            verdict = verdicts.get(o.task_id)
            if verdict is None and dropped:
                counts["outcomes_dropped"] += 1
                continue
            if verdict is None:
                fenced.append(o.task_id)
                counts["lease_lost"] += 1
                counts["fenced_writes"] += 1
                log.warning(
                    "lease_lost task=%s attempt=%s worker=%s outcome=%s: write fenced out, "
                    "another owner took over",
                    o.task_id,
                    o.attempt,
                    self.worker_id,
                    o.outcome,
                )
                continue
            event = _EVENTS.get(verdict) or f"task_{verdict}"
            counts[event] += 1
            if on_settled is not None:
                on_settled(event, o, held)
        if not self.pending:
            self._idle.set()
        return CompleteResult(verdicts, fenced)

    async def _write_singly(self) -> None:
        """Write the head batch one outcome at a time; one that cannot be written as
        it is becomes an error outcome that says why, and one that conflicts with
        another transaction (a serialization failure, a deadlock, a lock it could
        not get) waits at the back. Raises when the database is away, and after the
        pass when some outcome had to wait, so the loop backs off."""
        waited: DatabaseError | None = None
        for outcome in list(self.pending[:MAX_BATCH]):
            try:
                verdicts = await self._write_checked([outcome])
            except DatabaseError as exc:
                if is_transient(exc):
                    if connection_lost(exc):
                        raise
                    self.pending.append(self.pending.pop(0))
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
                self.pending[0] = replacement
                self.holdings.counts["outcomes_replaced"] += 1
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
        self._uncertain = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def _loop(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                async with self.lock:  # a claim may have carried the batch meanwhile
                    try:
                        if self.pending:
                            await self.run_once()
                        failures = 0
                        continue
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        failures += 1
                        error = exc
                        self._uncertain = True  # a lost answer may hide a commit
                        if failures >= SPLIT_AFTER or not is_transient(exc):
                            # Refused, or failing again and again: find the outcome
                            # at fault by writing them one by one.
                            try:
                                await self._write_singly()
                                failures = 0
                                continue
                            except asyncio.CancelledError:
                                raise
                            except Exception as again:
                                error = again
                self.last_error = clean_text(describe(error))[:REPLACED_ERROR_CHARS]
                log.warning(
                    "completer_failed pending=%d error=%s", len(self.pending), self.last_error
                )
                await asyncio.sleep(backoff_delay(failures, base=0.05, cap=2.0))

    async def flush(self, timeout: float) -> bool:
        """Wait until every pending outcome is written; False on timeout."""
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


def _replacement(outcome: Outcome, exc: BaseException) -> Outcome:
    """The outcome to record for one the database refused: the task's result is
    dropped and the reason is given instead. A success that cannot be stored fails
    for good (running it again returns the same); an error keeps its retry delay."""
    why = clean_text(describe(exc.__cause__ or exc))[:REPLACED_ERROR_CHARS]
    kind = {"succeeded": "discarded", "timed_out": "error"}.get(outcome.outcome, outcome.outcome)
    return Outcome(
        outcome.task_id,
        outcome.attempt,
        kind,
        error=f"the task's {outcome.outcome} outcome could not be recorded: {why}",
        delay=max(outcome.delay, 1.0),
    )


_EVENTS = {
    "succeeded": "task_succeeded",
    "failed": "task_failed",
    "retry": "task_retried",
    "released": "task_released",
    "cancelled": "task_cancelled",
    "recorded": "task_recorded_before_reconnect",
}
