"""The claim loop: the one owner of what a worker holds, runs and has yet to write.

Rules:
- It owns the prefetch buffer, the running attempts and the pending outcomes
  (:class:`~tenure._worker.completer.Outcomes`), and is the only writer of
  :class:`~tenure._worker.state.Holdings`. Other parts send it messages (its public
  methods: a cancel, a heartbeat's news, a wake-up) or read a snapshot.
- One pass (:meth:`ClaimLoop.run_once`): when a claim is due, it asks ``claim()`` for
  the free slots plus the prefetch, for the task names this worker can run, rotating
  which queue goes first, and the same statement first records the pending outcomes
  (``complete_and_claim``). When no claim is due (no free slot, no work, claims
  failing, a drain, self-fenced) the outcomes are written alone at once.
- Prefetched tasks wait in the buffer and start the moment a slot frees. While
  prefetched tasks wait, every slot is busy, so the buffer is topped up in batches
  (half a prefetch), not one claim per finished task. When a prefetched task waited
  through a whole heartbeat interval while another worker serving these queues had
  idle slots, what waits is handed back (released: no attempt spent), so that worker
  starts it now, and nothing is prefetched until the others are busy.
- A claim that fails backs off (0.1 s doubling up to the poll interval); outcomes
  keep going out meanwhile, on their own backoff.
- Drain: stop claiming, hand back what waits, let running attempts finish within the
  drain timeout, release the rest, and write every outcome.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

from tenure._db.connect import backoff_delay
from tenure._store.worker import AsyncStore
from tenure._store.worker_rows import Claimed, Outcome
from tenure._worker.clock import MONOTONIC, Clock
from tenure._worker.completer import Outcomes
from tenure._worker.config import WorkerConfig
from tenure._worker.heartbeat import Beat
from tenure._worker.metrics import Metrics
from tenure._worker.service import Streak
from tenure._worker.state import Held, Holdings
from tenure._worker.tasklog import TaskLog
from tenure._worker.threads import DaemonThreadPool
from tenure.context import TaskContext
from tenure.states import Reported

log = logging.getLogger(__name__)
# The shortest wait before claiming again after a rate limit held work back.
RATE_WAIT_MIN = 0.005

#: Runs one attempt to its end: how the worker executes a task.
Runner = Callable[[Held], Awaitable[Outcome]]


@dataclass(frozen=True)
class Pass:
    """What one pass did, and when the next one is due."""

    claimed: int  # tasks claimed
    settled: int  # outcomes written (or fenced out)
    again: bool  # the next pass is due at once
    retry_in: float  # else: seconds until a backed-off write or claim is due (inf: none)


class ClaimLoop:
    name = "claim-loop"

    def __init__(
        self,
        store: AsyncStore,
        holdings: Holdings,
        events: Counter[str],
        worker_id: UUID,
        config: WorkerConfig,
        names: list[str],
        run: Runner,
        pool: DaemonThreadPool,
        metrics: Metrics,
        tasklog: TaskLog,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.store = store
        self.holdings = holdings
        self.events = events
        self.worker_id = worker_id
        self.config = config
        self.names = names
        self.run = run
        self.pool = pool
        self.metrics = metrics
        self.clock = clock
        self.outcomes = Outcomes(store, holdings, events, worker_id, metrics, tasklog, clock)
        self._buffer: deque[Claimed] = deque()  # prefetched: claimed, waiting for a slot
        self._runners: dict[tuple[int, int], asyncio.Task[None]] = {}
        self._no_runners = asyncio.Event()
        self._no_runners.set()
        self._wake = asyncio.Event()
        self._no_claim = asyncio.Event()  # set while no claim is in flight
        self._no_claim.set()
        self._task: asyncio.Task[None] | None = None
        self._poll = config.poll_interval.total_seconds()
        self._claiming = True  # until the drain
        self._paused = False  # self-fenced
        self._maybe_more = True  # the last claim was full, or a wake-up or a poll came since
        self._hoarded = False  # prefetch waited while another worker had free slots
        self._head_at_beat: tuple[int, int] | None = None  # the buffer's head at the last beat
        self._turn = 0  # which queue goes first
        self._claim_failures = 0
        self._claim_streak = Streak("claim", clock)
        self._claim_at = -math.inf  # no claim before this time (after a failure)
        self._rated_at = math.inf  # when a rate limit that held work back can pay again

    # -- what others read ------------------------------------------------------------

    def prefetched(self) -> int:
        return len(self._buffer)

    def outcomes_waiting(self) -> tuple[int, float]:
        """How many outcomes wait, and for how long no write has settled any."""
        return len(self.outcomes), self.outcomes.stalled_for()

    # -- messages --------------------------------------------------------------------

    def wake(self) -> None:
        """There may be work: claim at the next chance (a notification, a poll)."""
        self._maybe_more = True
        self._wake.set()

    def cancel(self, task_id: int) -> None:
        """An operator cancelled ``task_id``: if this worker holds it, stop it now and
        record ``cancelled``. A running coroutine is cancelled; a thread is told
        through ``current().stop`` and left to finish on its own (threads cannot be
        killed), its slot freed at once."""
        held = self.holdings.get(task_id)
        if held is None or held.outcome_pending:
            return
        attempt = held.claimed.attempt
        held.context.mark_cancelled()
        runner = self._runners.pop((task_id, attempt), None)
        if runner is not None:
            runner.cancel()
        if held.thread is not None:
            self.pool.abandon(held.thread)
        self._buffer = deque(r for r in self._buffer if r.id != task_id)
        log.info("task_cancelling task=%s attempt=%s worker=%s", task_id, attempt, self.worker_id)
        self._submit(Outcome(task_id, attempt, Reported.CANCELLED, error="cancelled"))
        self._fill()

    def heard(self, beat: Beat) -> None:
        """A heartbeat's news: let go of lost attempts, stop cancelled ones, rebalance."""
        if beat.surrendered_kept is not None:
            self.holdings.keep_surrendered(beat.surrendered_kept)
        for task_id, attempt in beat.lost:
            self._lose(task_id, attempt, "taken over")
        for task_id in beat.cancel:
            self.cancel(task_id)
        # A prefetched task that waited in the buffer through a whole heartbeat interval,
        # while another worker had a free slot, is hoarded: hand back what waits and
        # prefetch nothing until the others are busy. A buffer that turns over between
        # beats (fast tasks, a stream's bursts) is no hoard, and prefetching keeps its
        # claims large.
        head = self._buffer_head()
        if beat.idle_elsewhere == 0:
            self._hoarded = False
        elif head is not None and head == self._head_at_beat:
            self._hoarded = True
            self._release_waiting(beat.idle_elsewhere, "idle capacity elsewhere")
        self._head_at_beat = self._buffer_head()

    def _buffer_head(self) -> tuple[int, int] | None:
        """The attempt that has waited longest in the buffer."""
        return (self._buffer[0].id, self._buffer[0].attempt) if self._buffer else None

    def self_fenced(self) -> None:
        """Stop claiming and drop every held attempt. One that never started is handed
        back by the next heartbeat, costing nothing; one that ran may have done its
        work, so it is surrendered: it expires and the reaper counts a crash."""
        self._paused = True
        for task_id, attempt in self.holdings.snapshot().items():
            held = self.holdings.holds(task_id, attempt)
            started = held is not None and held.started
            self._lose(task_id, attempt, "self-fenced", surrender=started)

    def reconnected(self) -> None:
        self._paused = False

    def stop_claiming(self) -> None:
        """The drain began: claim nothing more (outcomes still go out)."""
        self._claiming = False
        self._wake.set()

    # -- the loop --------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                done = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug of ours: the next pass may do better
                log.exception("claim_loop_failed error=%s", exc)
                done = Pass(0, 0, again=False, retry_in=self._poll)
            if done.again:
                continue
            poll = self._poll * random.uniform(0.8, 1.0)
            delay = min(poll, done.retry_in)
            woken = await self.clock.wait(self._wake, delay)
            self._wake.clear()
            if not woken and delay == poll:
                self._maybe_more = True  # poll: a NOTIFY may have been missed
            if self.clock.now() >= self._rated_at:
                self._rated_at = math.inf  # a rate limit's tokens are back: no NOTIFY says so
                self._maybe_more = True

    def _want(self) -> tuple[int, bool]:
        """Tasks to claim now, and whether a claim of that many is due."""
        want, ready = self._wanted()
        return want, ready and self.clock.now() >= self._claim_at

    def _wanted(self) -> tuple[int, bool]:
        """Tasks to claim, and whether a claim of that many would be due but for the
        backoff after a failed claim."""
        cfg = self.config
        # No prefetching after hoarding while another worker serving these queues had
        # idle slots: what this worker would hoard, that one could start now.
        prefetch = 0 if self._hoarded else cfg.prefetch_count
        want = cfg.concurrency + prefetch - self.holdings.waiting_or_running()
        # With prefetched tasks waiting, claim again only once half a prefetch is free.
        batched = want >= max(1, prefetch // 2) or not self._buffer
        ready = want > 0 and batched and self._claiming and not self._paused and self._maybe_more
        return want, ready

    async def run_once(self) -> Pass:
        """One pass: write the outcomes no claim will carry, then claim if one is due."""
        outcomes = self.outcomes
        if outcomes.slowing:
            await outcomes.slow_down()  # before the outcomes: one may end its task
        want, due = self._want()
        settled = claimed = 0
        writable = len(outcomes) > 0 and self.clock.now() >= outcomes.retry_at
        if writable and (not due or outcomes.uncertain):
            settled += await outcomes.write()
            want, due = self._want()
        if due:
            self._maybe_more = False
            self._turn += 1
            carried = outcomes.batch_for_claim()
            self._no_claim.clear()
            try:
                rows, rate_wait = await self._claim(want, carried)
            except Exception as exc:
                if carried:
                    outcomes.answer_lost()  # they may have committed before the answer was lost
                self._claim_failures += 1
                self._maybe_more = True
                self._claim_streak.failed(f"error={exc}")
                delay = backoff_delay(self._claim_failures, base=0.1, cap=self._poll)
                self._claim_at = self.clock.now() + delay
            else:
                self._claim_failures = 0
                self._claim_streak.ok()
                settled += len(carried)
                claimed = len(rows)
                self._hold(rows)
                self._fill()
                if claimed == want:
                    self._maybe_more = True
                elif rate_wait is not None:
                    # Spread the fleet's claims out: they would all wake at once.
                    wait = max(RATE_WAIT_MIN, rate_wait) * random.uniform(1.0, 1.25)
                    self._rated_at = self.clock.now() + wait
            finally:
                self._no_claim.set()
        return self._pass(claimed, settled)

    def _pass(self, claimed: int, settled: int) -> Pass:
        now, outcomes = self.clock.now(), self.outcomes
        writable = len(outcomes) > 0 and now >= outcomes.retry_at
        _, ready = self._wanted()
        if writable or (ready and now >= self._claim_at):
            return Pass(claimed, settled, again=True, retry_in=0.0)
        retry = math.inf
        if len(outcomes):
            retry = outcomes.retry_at - now
        if ready:  # held back only by the backoff after a failed claim
            retry = min(retry, self._claim_at - now)
        if self._rated_at < math.inf:
            retry = min(retry, self._rated_at - now)
        return Pass(claimed, settled, again=False, retry_in=max(0.0, retry))

    async def _claim(self, want: int, carried: list[Outcome]) -> tuple[list[Claimed], float | None]:
        """Claim up to ``want``, writing ``carried`` outcomes in the same statement: the
        tasks claimed, and the seconds until a rate limit that held work back can pay."""
        cfg, store = self.config, self.store
        if not carried:
            result = await store.claim(
                worker=self.worker_id,
                queues=cfg.queues,
                names=self.names,
                limit=want,
                lease=cfg.lease,
                start=self._turn,
            )
        else:
            result = await store.complete_and_claim(
                worker=self.worker_id,
                outcomes=carried,
                queues=cfg.queues,
                names=self.names,
                limit=want,
                lease=cfg.lease,
                start=self._turn,
            )
            self.outcomes.settle(len(carried), result.verdicts)
        return result.claimed, result.rate_wait

    # -- attempts --------------------------------------------------------------------

    def _hold(self, rows: list[Claimed]) -> None:
        """Take on freshly claimed attempts; they wait in the buffer for a slot."""
        holdings, debug = self.holdings, log.isEnabledFor(logging.DEBUG)
        for row in rows:
            context = TaskContext(
                row.id, row.attempt, row.task_name, row.queue, row.schedule, row.schedule_tick
            )
            holdings.claimed(Held(row, context))
            if debug:
                log.debug(
                    "task_claimed task=%s attempt=%s queue=%s worker=%s",
                    row.id,
                    row.attempt,
                    row.queue,
                    self.worker_id,
                )
        self.events["task_claimed"] += len(rows)
        self.metrics.claimed(rows)
        self._buffer.extend(rows)

    def _fill(self) -> None:
        """Start prefetched tasks while slots are free (none while self-fenced: what
        waits is lost to this worker and handed back, never started)."""
        while (
            self._buffer and self.holdings.running() < self.config.concurrency and not self._paused
        ):
            row = self._buffer.popleft()
            held = self.holdings.holds(row.id, row.attempt)
            if held is None:
                continue  # lost while it waited: nothing to run
            self.holdings.started(held)
            runner = asyncio.create_task(self._attempt(held), name=f"task-{row.id}")
            self._runners[(row.id, row.attempt)] = runner
            self._no_runners.clear()

    async def _attempt(self, held: Held) -> None:
        row = held.claimed
        try:
            outcome = await self.run(held)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours must not strand the task as running
            log.exception("task_runner_failed task=%s attempt=%s", row.id, row.attempt)
            outcome = Outcome(
                row.id, row.attempt, Reported.ERROR, error=f"worker error: {exc!r}", delay=1.0
            )
        finally:
            self._runners.pop((row.id, row.attempt), None)
            if not self._runners:
                self._no_runners.set()
            held.thread = None
        self._submit(outcome)
        self._fill()

    def _submit(self, outcome: Outcome) -> None:
        self.outcomes.add(outcome)
        self._wake.set()  # a slot is free, and an outcome waits

    def _lose(self, task_id: int, attempt: int, why: str, *, surrender: bool = False) -> None:
        held = self.holdings.lose(task_id, attempt, surrender=surrender)
        if held is None:
            return
        held.context.mark_lost()
        if held.thread is not None:  # a thread still running it no longer fills a slot
            self.pool.abandon(held.thread)
        self._fill()
        self.events["lease_lost"] += 1
        log.warning(
            "lease_lost task=%s attempt=%s worker=%s reason=%s",
            task_id,
            attempt,
            self.worker_id,
            why,
        )

    def _release_waiting(self, count: int, why: str) -> int:
        """Hand back up to ``count`` prefetched tasks, newest first, spending no attempt."""
        released = 0
        while self._buffer and released < count:
            row = self._buffer.pop()
            if self.holdings.holds(row.id, row.attempt) is None:
                continue
            self._submit(Outcome(row.id, row.attempt, Reported.RELEASED))
            released += 1
        if released:
            log.info(
                "tasks_rebalanced worker=%s released=%d reason=%s", self.worker_id, released, why
            )
        return released

    # -- drain -----------------------------------------------------------------------

    async def drain(self, timeout: float, flush_timeout: float) -> tuple[int, bool]:
        """Stop claiming, hand back what waits, give running attempts ``timeout``
        seconds, release those still running, and wait up to ``flush_timeout`` for
        every outcome to be written. Returns how many running attempts were released
        and whether every outcome was written."""
        self.stop_claiming()
        await self._no_claim.wait()  # what a claim in flight takes is held, then handed back
        self._release_waiting(len(self._buffer), "draining")
        clock = self.clock
        deadline = clock.now() + timeout
        while self._runners and clock.now() < deadline:
            await clock.wait(self._no_runners, deadline - clock.now())
        released = 0
        for (task_id, attempt), runner in list(self._runners.items()):
            held = self.holdings.holds(task_id, attempt)
            runner.cancel()
            if held is None:
                continue
            held.context.mark_stop()
            self._submit(Outcome(task_id, attempt, Reported.RELEASED))
            released += 1
        if self._runners:
            await clock.wait(self._no_runners, 1.0)
        self._wake.set()
        return released, await clock.wait(self.outcomes.idle, flush_timeout)
