"""Completer: writes attempt outcomes in batches, every write fenced.

Outcomes queue up as tasks finish; one statement writes all of them. Each is fenced
on (task, attempt, owner) in the database: an outcome for an attempt this worker
no longer owns changes nothing, is logged as ``lease_lost`` and counted. A batch
that fails to reach the database stays queued and is tried again with backoff; the
heartbeat keeps those leases alive meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from uuid import UUID

from tenure._db.connect import backoff_delay
from tenure._worker.link import Link
from tenure._worker.state import Holdings

log = logging.getLogger(__name__)

MAX_BATCH = 500


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, as the completer writes it."""

    task_id: int
    attempt: int
    outcome: str  # succeeded | error | timed_out | discarded | cancelled | released
    result: str | None = None  # JSON text
    error: str | None = None
    delay: float = 0.0  # seconds before a retry


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

    def submit(self, outcome: Outcome) -> None:
        held = self.holdings.held.get(outcome.task_id)
        if held is not None and held.claimed.attempt == outcome.attempt:
            held.completing = True
        self.pending.append(outcome)
        self._idle.clear()
        self._wake.set()

    async def run_once(self) -> CompleteResult:
        """Write up to MAX_BATCH pending outcomes in one statement."""
        batch = self.pending[:MAX_BATCH]
        if not batch:
            return CompleteResult({}, [])
        rows = await self.link.fetch(
            "task_complete_many",
            {
                "worker": self.worker_id,
                "ids": [o.task_id for o in batch],
                "attempts": [o.attempt for o in batch],
                "outcomes": [o.outcome for o in batch],
                "results": [o.result for o in batch],
                "errors": [o.error for o in batch],
                "delays": [o.delay for o in batch],
            },
        )
        del self.pending[: len(batch)]
        verdicts = {int(r[0]): str(r[1]) for r in rows}
        fenced: list[int] = []
        counts = self.holdings.counts
        for o in batch:
            self.holdings.drop(o.task_id, o.attempt)
            verdict = verdicts.get(o.task_id)
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
            event = _EVENTS.get(verdict, f"task_{verdict}")
            counts[event] += 1
            log.debug("%s task=%s attempt=%s", event, o.task_id, o.attempt)
        if not self.pending:
            self._idle.set()
        return CompleteResult(verdicts, fenced)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def _loop(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                try:
                    await self.run_once()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    log.warning("completer_failed pending=%d error=%s", len(self.pending), str(exc))
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
}
