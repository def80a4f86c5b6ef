"""Notifier: LISTEN on the schema's channel and wake the claim loop for our queues.

The same channel carries ``!cancel:<id>`` when an operator cancels a running task,
so the worker that holds it stops it at once instead of at its next heartbeat.

Rules:
- Wake-ups coalesce: many notifications between two claims cause one claim.
- A notification is a hint, never an order: PostgreSQL lets any role that can
  connect NOTIFY on any channel. ``!cancel:<id>`` for a task this worker does not
  hold is dropped without a query; for one it holds, the row is read (fenced on the
  attempt and owner held) and the task is stopped only if it says
  ``cancel_requested``. At most one look-up is in flight and look-ups are spaced
  ``CANCEL_LOOKUP_GAP`` apart, the ids named meanwhile gathered into one
  ``id = ANY(...)`` query: a flood of notifications cannot become a flood of
  queries. The heartbeat reads the same flag on every beat, so a look-up that fails
  only delays a cancel.
- A payload no tenure process sends (``!cancel:abc``) is logged once per kind and
  ignored; the listening connection stays up.
- When the listening connection breaks it is reopened with backoff (one pass of the
  loop is one listening session); the claim loop's poll interval covers the gap.
  With ``listen=False`` (connection poolers in transaction mode) the notifier is not
  started and polling alone drives claims.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from uuid import UUID

from tenure._db.connect import backoff_delay, describe
from tenure._store.worker import AsyncStore
from tenure._worker.clock import MONOTONIC, Clock
from tenure._worker.service import Service
from tenure._worker.state import Holdings

log = logging.getLogger(__name__)

CANCEL_PREFIX = "!cancel:"  # payload sent by cancel_task() for a running task
CANCEL_LOOKUP_GAP = timedelta(milliseconds=100)  # least time between two cancel look-ups
_MAX_TASK_ID = 2**63 - 1


def parse_cancel(payload: str) -> int | None:
    """The task id of a ``!cancel:<id>`` payload, or None if it names no task id."""
    digits = payload[len(CANCEL_PREFIX) :]
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 19):
        return None
    task_id = int(digits)
    return task_id if 0 < task_id <= _MAX_TASK_ID else None


def _shown(payload: str) -> str:
    """A payload cut short for a log line (%r escapes what it holds)."""
    return payload if len(payload) <= 80 else payload[:80] + "..."


class CancelHints:
    """Turn ``!cancel:<id>`` hints into cancels the rows confirm.

    ``add`` takes a hint; ``run_once`` looks up every pending id in one query and
    calls ``cancel`` for each held attempt whose row asks for it, returning those.
    """

    def __init__(
        self,
        store: AsyncStore,
        holdings: Holdings,
        worker_id: UUID,
        cancel: Callable[[int], None],
        events: Counter[str],
        gap: timedelta = CANCEL_LOOKUP_GAP,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.store = store
        self.holdings = holdings
        self.worker_id = worker_id
        self.cancel = cancel
        self.events = events
        self.gap = gap.total_seconds()
        self.clock = clock
        self.pending: set[int] = set()
        self.lookups = 0
        self._task: asyncio.Task[None] | None = None

    def add(self, task_id: int) -> None:
        """A notification named ``task_id``: look at its row soon if this worker holds it."""
        held = self.holdings.get(task_id)
        if held is None or held.outcome_pending:
            return  # not ours, or its outcome is already on its way: nothing to stop
        self.pending.add(task_id)
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="cancel-hints")

    async def _loop(self) -> None:
        try:
            while self.pending:
                try:
                    await self.run_once()
                except Exception:  # a bug of ours: the heartbeat still reads the flag
                    log.exception("cancel_lookup_failed worker=%s", self.worker_id)
                # Stay a while so hints arriving now wait for one look-up, not start one.
                await self.clock.sleep(self.gap)
        finally:
            self._task = None

    async def run_once(self) -> list[int]:
        ids, self.pending = self.pending, set()
        asked = {
            task_id: held.claimed.attempt
            for task_id in ids
            if (held := self.holdings.get(task_id)) is not None and not held.outcome_pending
        }
        if not asked:
            return []
        self.lookups += 1
        try:
            flagged = await self.store.cancel_requested(worker=self.worker_id, held=asked)
        except Exception as exc:  # the next heartbeat reads the same flag
            log.warning("cancel_lookup_failed error=%s", describe(exc))
            return []
        confirmed: list[int] = []
        for task_id in flagged:
            if self.holdings.holds(task_id, asked[task_id]) is not None:
                self.cancel(task_id)
                confirmed.append(task_id)
        unconfirmed = len(asked) - len(confirmed)
        if unconfirmed:
            self.events["cancel_hint_unconfirmed"] += unconfirmed
            log.debug("cancel_hint_unconfirmed tasks=%d worker=%s", unconfirmed, self.worker_id)
        return confirmed

    async def stop(self) -> None:
        task, self._task = self._task, None
        self.pending.clear()
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


class Notifier(Service):
    """Listens, one session a pass; a broken session is followed by a backoff."""

    name = "notifier"

    def __init__(
        self,
        store: AsyncStore,
        queues: tuple[str, ...],
        wake: Callable[[], None],
        hints: CancelHints,
        clock: Clock = MONOTONIC,
    ) -> None:
        super().__init__(0.0, jitter=0.0, clock=clock)
        self.store = store
        self.queues = set(queues)
        self.wake_claims = wake
        self.hints = hints
        self._ignored: set[str] = set()  # kinds of bad notification already logged

    def handle(self, payload: str) -> None:
        """Act on one notification's payload; a bad one is ignored (and logged once)."""
        if payload in self.queues:
            self.wake_claims()
        elif payload.startswith(CANCEL_PREFIX):
            task_id = parse_cancel(payload)
            if task_id is None:
                self._once(
                    "cancel_without_task_id",
                    "notification_ignored kind=cancel_without_task_id payload=%r: no tenure "
                    "process sends this; further ones are ignored without a log line",
                    _shown(payload),
                )
            else:
                self.hints.add(task_id)
        # anything else names a queue other workers serve

    def _once(self, kind: str, message: str, *args: object) -> None:
        """Log ``message`` the first time a notification of ``kind`` is ignored: a flood
        of them must not flood the log."""
        if kind not in self._ignored:
            self._ignored.add(kind)
            log.warning(message, *args)

    async def run_once(self) -> None:
        """One listening session, until its connection breaks (then it raises)."""
        async with self.store.listening() as payloads:
            self.failures = 0
            self.wake_claims()  # anything sent while we were not listening
            async for payload in payloads:
                try:
                    self.handle(payload)
                except Exception as exc:  # a bug of ours must not drop the listener
                    self._once(
                        f"handler_error:{type(exc).__name__}",
                        "notification_ignored kind=handler_error payload=%r error=%r",
                        _shown(payload),
                        exc,
                    )

    def next_delay(self) -> float:
        return backoff_delay(self.failures, base=0.2, cap=5.0) if self.failures else 0.0

    async def stop(self) -> None:
        await super().stop()
        await self.hints.stop()
        await self.store.close()
