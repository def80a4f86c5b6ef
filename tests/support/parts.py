"""The worker's parts built for a test, on any store: the claim loop and its heartbeat."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from tenure._store.worker_rows import Outcome
from tenure._worker.claim_loop import ClaimLoop
from tenure._worker.clock import MONOTONIC, Clock
from tenure._worker.config import WorkerConfig
from tenure._worker.heartbeat import Heartbeat
from tenure._worker.metrics import Metrics
from tenure._worker.state import Held, Holdings
from tenure._worker.status import WorkerStatus
from tenure._worker.tasklog import TaskLog
from tenure._worker.threads import DaemonThreadPool


class Runs:
    """A claim loop's runner whose attempts end when the test says so."""

    def __init__(self) -> None:
        self.running: dict[int, tuple[int, asyncio.Future[Outcome]]] = {}
        self.started: list[int] = []  # task ids, in the order they started

    async def __call__(self, held: Held) -> Outcome:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.running[held.claimed.id] = (held.claimed.attempt, future)
        self.started.append(held.claimed.id)
        try:
            return await future
        finally:
            self.running.pop(held.claimed.id, None)

    def finish(self, task_ids: Iterable[int], outcome: str = "succeeded", **fields: Any) -> None:
        """End these running attempts with ``outcome``."""
        for task_id in list(task_ids):
            attempt, future = self.running[task_id]
            future.set_result(Outcome(task_id, attempt, outcome, **fields))


def claim_loop(
    store: Any,
    *,
    worker_id: uuid.UUID | None = None,
    holdings: Holdings | None = None,
    concurrency: int = 2,
    prefetch: int = 0,
    lease: timedelta = timedelta(seconds=10),
    poll: timedelta = timedelta(seconds=1),
    names: tuple[str, ...] = ("t",),
    run: Any = None,
    clock: Clock = MONOTONIC,
) -> ClaimLoop:
    """A claim loop on ``store`` with real metrics, task log and thread pool."""
    config = WorkerConfig(
        queues=("default",),
        concurrency=concurrency,
        prefetch=prefetch,
        lease=lease,
        poll_interval=poll,
    )
    worker_id = worker_id or uuid.uuid4()
    events: Counter[str] = Counter()
    tasklog = TaskLog(worker_id, 15.0, lambda: WorkerStatus(events=events), clock=clock)
    return ClaimLoop(
        store,
        holdings if holdings is not None else Holdings(),
        events,
        worker_id,
        config,
        list(names),
        run if run is not None else Runs(),
        DaemonThreadPool(concurrency),
        Metrics(clock),
        tasklog,
        clock,
    )


def heartbeat_of(claims: ClaimLoop, store: Any, clock: Clock = MONOTONIC) -> Heartbeat:
    """The heartbeat a worker gives this claim loop."""
    lease = claims.config.lease
    return Heartbeat(
        store,
        claims.holdings,
        claims,
        claims.worker_id,
        lease,
        claims.config.heartbeat_interval,
        clock,
    )
