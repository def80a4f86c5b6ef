"""Completer: writes attempt outcomes in batches, every write fenced.

Outcomes queue up as tasks finish; one statement writes all of them. Each is fenced
on (task, attempt, owner) in the database: an outcome for an attempt this worker
no longer owns changes nothing, is logged as ``lease_lost`` and counted. A batch
that fails to reach the database stays queued and is tried again with backoff (the
heartbeat keeps those leases alive meanwhile); if the failed try had committed
after all, the retry finds the attempts already recorded and counts them done. A
batch the database refuses outright is written one outcome at a time, so one bad
outcome cannot hold the others back.

While a worker claims, its claim loop carries the outcomes: a new outcome wakes that
loop (``carrier``), whose next claim writes the pending batch in the same statement
(``carried``), and which kicks this loop for outcomes it does not carry. Writes
take ``lock``, so a batch is written by one of the two, never both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NamedTuple
from uuid import UUID

from tenure._db import arrays
from tenure._db.connect import backoff_delay, is_transient
from tenure._worker.link import Link
from tenure._worker.state import Held, Holdings
from tenure.errors import DatabaseError

log = logging.getLogger(__name__)

MAX_BATCH = 500


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
        # Told each settled outcome's event and the attempt it ended (None if no longer
        # held); the worker's metrics count outcomes per queue and task with it.
        self.on_settled: Callable[[str, Held | None], None] | None = None
        # While set, a new outcome calls this instead of waking the completer's loop.
        self.carrier: Callable[[], None] | None = None
        self.lock = asyncio.Lock()

    def submit(self, outcome: Outcome) -> None:
        """Queue an outcome; a second outcome for the same attempt is ignored."""
        key = (outcome.task_id, outcome.attempt)
        if key in self._submitted:
            log.debug("duplicate outcome ignored task=%s attempt=%s", *key)
            return
        self._submitted.add(key)
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
        verdicts = await self._write(batch)
        if self._uncertain:
            # An earlier try of these outcomes may have committed before its answer
            # was lost: what this worker already recorded is done, not fenced.
            self._uncertain = False
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
        return self._settle(len(batch), verdicts)

    def _settle(self, n: int, verdicts: dict[int, str], dropped: bool = False) -> CompleteResult:
        batch = self.pending[:n]
        del self.pending[:n]
        fenced: list[int] = []
        counts = self.holdings.counts
        submitted, drop, on_settled = self._submitted, self.holdings.drop, self.on_settled
        debug = log.isEnabledFor(logging.DEBUG)
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
                on_settled(event, held)
            if debug:
                log.debug(
                    "%s task=%s attempt=%s queue=%s worker=%s",
                    event,
                    o.task_id,
                    o.attempt,
                    held.claimed.queue if held is not None else "-",
                    self.worker_id,
                )
        if not self.pending:
            self._idle.set()
        return CompleteResult(verdicts, fenced)

    async def _write_singly(self) -> None:
        """A batch the database refused: write its outcomes one by one, and turn one
        that cannot be written as it is into an error the task's retry policy handles."""
        for outcome in list(self.pending[:MAX_BATCH]):
            try:
                verdicts = await self._write([outcome])
            except DatabaseError as exc:
                if is_transient(exc.__cause__ or exc):
                    raise
                log.error(
                    "outcome_unwritable task=%s attempt=%s error=%s; recording an error instead",
                    outcome.task_id,
                    outcome.attempt,
                    exc,
                )
                replacement = Outcome(
                    outcome.task_id,
                    outcome.attempt,
                    "error",
                    error=f"the task's outcome could not be recorded: {exc}",
                    delay=1.0,
                )
                self.pending[0] = replacement
                try:
                    verdicts = await self._write([replacement])
                except DatabaseError as again:
                    if is_transient(again.__cause__ or again):
                        raise
                    # Not a takeover: the database refuses both. The lease will expire
                    # and the reaper will count a crash.
                    log.error("outcome_dropped task=%s: %s", outcome.task_id, again)
                    self._settle(1, {}, dropped=True)
                    continue
            self._settle(1, verdicts)

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
                        if isinstance(exc, DatabaseError) and not is_transient(
                            exc.__cause__ or exc
                        ):
                            try:
                                await self._write_singly()
                                continue
                            except Exception as again:
                                error = again
                        self._uncertain = True
                log.warning("completer_failed pending=%d error=%s", len(self.pending), error)
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


_EVENTS = {
    "succeeded": "task_succeeded",
    "failed": "task_failed",
    "retry": "task_retried",
    "released": "task_released",
    "cancelled": "task_cancelled",
    "recorded": "task_recorded_before_reconnect",
}
