"""One worker process: the control plane that ties the loops together.

Start-up: resolve the DSN (retrying with backoff while the database is
unreachable), apply migrations, register the worker row, publish the registry's
fleet-wide limits, then start the heartbeat, reaper, notifier and completer and
run the claim loop. A start-up failure that waiting cannot mend (a DSN that does
not parse, no such database or role, a refused login or schema, a bad setting, an
embedded server that cannot start) ends the worker with one line and exit code 1.

Drain (SIGTERM or SIGINT): stop claiming, let running attempts finish within the
drain timeout, hand back what is left (released: another worker takes it at once,
no attempt spent), mark the worker gone and return 0. A second signal exits at
once; leases then expire normally. A child of ``--processes`` takes a signal that
follows the first within two seconds as the same request: a group-wide signal
reaches it twice, directly and forwarded by its supervisor.

Connections: three per process — claims and outcomes, heartbeat and reaper, LISTEN —
and a fourth for the moment of a vacuum of the hot table (see the vacuumer).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import time
from collections import deque
from uuid import UUID, uuid4

import psycopg
from psycopg.types.json import Jsonb

from tenure import __version__
from tenure._db import connect as dbconnect
from tenure._db.migrate import migrate
from tenure._maintenance.promoter import Promoter
from tenure._maintenance.reaper import Reaper
from tenure._maintenance.vacuumer import Vacuumer
from tenure._worker.claimer import Claimer
from tenure._worker.completer import Completer, Outcome
from tenure._worker.config import WorkerConfig
from tenure._worker.executor import execute
from tenure._worker.heartbeat import Heartbeat, HeartbeatResult
from tenure._worker.http import Surfaces, SurfacesConfig
from tenure._worker.lineage import START_FAILED
from tenure._worker.link import Link
from tenure._worker.metrics import Metrics
from tenure._worker.notifier import CancelHints, Notifier
from tenure._worker.processes import ProcessPool
from tenure._worker.state import Claimed, Held, Holdings
from tenure._worker.tasklog import TaskLog
from tenure._worker.threads import DaemonThreadPool
from tenure.context import TaskContext
from tenure.errors import ConfigError, EmbeddedServerError, SchemaNotReady
from tenure.options import QueueOptions
from tenure.registry import Registry

log = logging.getLogger(__name__)

UNKNOWN_CHECK_INTERVAL = 60.0
STARTUP_BACKOFF_CAP = 30.0
# Seconds within which a supervised child takes a repeated signal as the same request.
DUPLICATE_SIGNAL = 2.0

# Statements the server refused for good: no such database (3D000), a refused login
# (28000, 28P01), no privilege (42501) and the rest of class 42 (the schema holds
# objects tenure cannot use).
_PERMANENT_SQLSTATES = frozenset({"3D000", "28000", "28P01", "42501"})
# libpq reports a refused login with the server's message only, never its SQLSTATE, so
# those are recognised by their text; a message in another language is retried as
# before. "connection is bad: invalid ..." is a DSN option libpq cannot use.
_REFUSED_LOGIN = (
    "does not exist",  # 3D000: database; 28000: role
    "authentication failed",  # 28P01: password; 28000: peer, ident, cert
    "no pg_hba.conf entry",  # 28000
    "is not permitted to log in",  # 28000
    "permission denied for database",  # 42501: no CONNECT
    "connection is bad: invalid",
)


def permanent(exc: BaseException) -> bool:
    """True for a start-up failure that no amount of waiting mends (a server that is
    down, starting or full is transient: it is retried)."""
    if isinstance(exc, ConfigError | EmbeddedServerError | SchemaNotReady):
        return True
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, psycopg.Error):
        cause = cause.__cause__
    if cause is None:
        return False
    if cause.sqlstate:  # a statement (a migration) the server refused
        return cause.sqlstate in _PERMANENT_SQLSTATES or cause.sqlstate.startswith("42")
    if isinstance(cause, psycopg.ProgrammingError):  # the DSN does not parse
        return True
    text = str(cause)
    return any(sign in text for sign in _REFUSED_LOGIN)


class Worker:
    """Runs the tasks of one registry from the configured queues until drained."""

    def __init__(
        self,
        registry: Registry,
        config: WorkerConfig,
        *,
        dsn: str | None = None,
        surfaces: SurfacesConfig | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        self.schema = registry.schema
        self.id: UUID = uuid4()
        self._dsn = dsn
        self.holdings = Holdings()
        self.pool = DaemonThreadPool(config.concurrency)
        self.processes = ProcessPool(config.process_slot_count, config.max_memory_per_child)
        self._wake = asyncio.Event()
        self._maybe_more = True
        self._others_idle = False
        self._draining = False
        self._signals = 0
        self._first_signal = 0.0
        self._supervised = "TENURE_SUPERVISED_SLOT" in os.environ
        self._runners: dict[tuple[int, int], asyncio.Task[None]] = {}
        self.buffer: deque[Claimed] = deque()  # prefetched: claimed, waiting for a slot
        self._unknown_reported: set[str] = set()
        self.ready = asyncio.Event()
        self.metrics = Metrics()  # served on /metrics when a port is given
        self.tasklog = TaskLog(
            self.holdings,
            self.id,
            config.log_summary.total_seconds(),
            prefetched=lambda: len(self.buffer),
        )
        self.surfaces_config = surfaces
        self.surfaces: Surfaces | None = None

    # -- control ----------------------------------------------------------------------

    def request_drain(self) -> None:
        """Begin a drain (what SIGTERM does)."""
        if not self._draining:
            log.info("worker_draining worker=%s", self.id)
        self._draining = True
        self._wake.set()

    def _on_signal(self, signum: int) -> None:
        now = time.monotonic()
        if self._signals and self._supervised and now - self._first_signal < DUPLICATE_SIGNAL:
            # A group-wide signal (systemd's default KillMode, Ctrl-C in a terminal)
            # reaches a supervised child directly and again through its supervisor:
            # one stop request, not the second one that means "stop now".
            log.info("worker_signal_repeated worker=%s signal=%s", self.id, signum)
            return
        self._signals += 1
        self._first_signal = self._first_signal or now
        if self._signals > 1:
            log.warning("worker_stopped_now worker=%s signal=%s", self.id, signum)
            logging.shutdown()
            os._exit(1)
        self.request_drain()

    def wake(self) -> None:
        self._maybe_more = True
        self._wake.set()

    # -- start-up ---------------------------------------------------------------------

    async def _prepare(self) -> str | None:
        """The DSN once the schema is ready; None after a failure retrying cannot mend."""
        failures = 0
        while not self._draining:
            try:
                dsn = await asyncio.to_thread(dbconnect.resolve_dsn, self._dsn)
                await asyncio.to_thread(self._migrate, dsn)
                return dsn
            except Exception as exc:
                if permanent(exc):
                    log.error(
                        "worker_start_failed error=%s; not retrying: fix it, then start "
                        "the worker again",
                        dbconnect.describe(exc),
                    )
                    return None
                failures += 1
                delay = min(STARTUP_BACKOFF_CAP, 0.5 * 2 ** (failures - 1)) * random.uniform(0.8, 1)
                log.error(
                    "worker_start_failed attempt=%d error=%s; retrying in %.1fs",
                    failures,
                    dbconnect.describe(exc),
                    delay,
                )
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
                self._wake.clear()
        raise asyncio.CancelledError

    def _migrate(self, dsn: str) -> None:
        conn = dbconnect.connect(dsn, "tenure-migrate")
        try:
            dbconnect.retry_sync(lambda: migrate(conn, self.schema), what="migrate")
        finally:
            conn.close()

    # -- running ----------------------------------------------------------------------

    async def run(self) -> int:
        """Run until drained; returns the process exit code. Metrics and health
        endpoints, when configured, are served from start-up until the drain ends."""
        self.surfaces = await Surfaces(self, self.surfaces_config).start()
        try:
            return await self._run()
        finally:
            await self.surfaces.stop()

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        try:
            dsn = await self._prepare()
        except asyncio.CancelledError:
            return 0
        if dsn is None:
            return START_FAILED
        cfg = self.config
        work = Link(dsn, self.schema, "work")
        beat = Link(dsn, self.schema, "heartbeat")
        listen = Link(dsn, self.schema, "listen")
        names = sorted(self.registry.tasks)
        await beat.fetch(
            "worker_register",
            {
                "worker": self.id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": list(cfg.queues),
                "concurrency": cfg.concurrency,
                "version": __version__,
            },
        )
        await self._publish(beat, names)
        self.heartbeat = Heartbeat(
            beat,
            self.holdings,
            self.id,
            cfg.lease,
            cfg.heartbeat_interval,
            on_beat=self._after_beat,
            on_lost=self._on_lost,
        )
        self.promoter = Promoter(beat, cfg.poll_interval)
        self.reaper = Reaper(
            beat,
            cfg.heartbeat_interval,
            gone_after=max(cfg.lease * 4, cfg.lease + cfg.drain_timeout),
        )
        self.vacuumer = Vacuumer(beat)
        self.completer = Completer(work, self.holdings, self.id)
        self.completer.on_settled = self._settled
        self.completer.carrier = self._wake.set  # the claim loop carries outcomes
        self.heartbeat.outcomes = self.completer.waiting
        self.claimer = Claimer(work, self.id, cfg.queues, names, cfg.lease)
        hints = CancelHints(beat, self.holdings, self.id, self.cancel_task)
        self.notifier = Notifier(listen, cfg.queues, self.wake, hints)
        self.heartbeat.start()
        self.reaper.start()
        self.promoter.start()
        self.vacuumer.start()
        self.completer.start()
        self.tasklog.start()
        if cfg.listen:
            self.notifier.start()
        watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
        unknown = asyncio.create_task(self._unknown_loop(beat, names), name="unknown-tasks")
        log.info(
            "worker_started worker=%s queues=%s concurrency=%d process_slots=%d lease=%ss pid=%d",
            self.id,
            ",".join(cfg.queues),
            cfg.concurrency,
            self.processes.size,
            cfg.lease.total_seconds(),
            os.getpid(),
        )
        self.ready.set()
        try:
            await self._claim_loop()
            await self._drain(beat)
        finally:
            watchdog.cancel()
            unknown.cancel()
            await self.notifier.stop()
            await self.completer.stop()
            await self.reaper.stop()
            await self.promoter.stop()
            await self.vacuumer.stop()
            await self.heartbeat.stop()
            try:
                await beat.fetch("worker_set_state", {"worker": self.id, "state": "gone"})
            except Exception as exc:
                log.warning("worker_state_failed error=%s", exc)
            for link in (work, beat, listen):
                await link.close()
            self.pool.shutdown(wait=False)
            self.processes.close()
            await self.tasklog.stop()
            self.tasklog.summarise()  # what happened since the last summary
        log.info("worker_stopped worker=%s counts=%s", self.id, dict(self.holdings.counts))
        return 0

    async def _publish(self, beat: Link, names: list[str]) -> None:
        """Publish the registry's task limits and queue settings for the fleet."""
        tasks = [self.registry.tasks[n].options for n in names]
        await beat.fetch(
            "limits_sync",
            {
                "names": names,
                "limits": [t.max_concurrency for t in tasks],
                "per_key": [t.max_concurrency_per_key for t in tasks],
            },
        )
        queues = [
            self.registry.queue_options.get(q) or QueueOptions(name=q)
            for q in self.registry.queues()
        ]
        await beat.fetch(
            "queues_sync",
            {
                "names": [q.name for q in queues],
                "weights": [q.weight for q in queues],
                "limits": [q.max_concurrency for q in queues],
                "per_key": [q.max_concurrency_per_key for q in queues],
                "key_weights": [Jsonb(q.key_weights) for q in queues],
            },
        )
        await beat.fetch("limits_flag_running", {})

    async def _claim_loop(self) -> None:
        cfg = self.config
        poll = cfg.poll_interval.total_seconds()
        failures = 0
        while not self._draining:
            # No prefetching while another worker serving these queues has idle slots:
            # what this worker would hoard, that one could start now.
            prefetch = 0 if self._others_idle else cfg.prefetch_count
            want = cfg.concurrency + prefetch - self.holdings.waiting_or_running()
            # While prefetched tasks still wait, every slot is busy: top the buffer up in
            # batches (half a prefetch) instead of one claim per finished task.
            batched = want >= max(1, prefetch // 2) or not self.buffer
            if want > 0 and batched and not self.heartbeat.fenced and self._maybe_more:
                self._maybe_more = False
                try:
                    claimed = await self._claim(want)
                    failures = 0
                except Exception as exc:
                    failures += 1
                    self._maybe_more = True
                    self.completer.kick()  # outcomes go on their own while claims fail
                    log.warning("claim_failed error=%s", exc)
                    await asyncio.sleep(dbconnect.backoff_delay(failures, base=0.1, cap=poll))
                    continue
                self._hold(claimed)
                self._fill()
                if len(claimed) == want:
                    self._maybe_more = True
                    continue
            self.completer.kick()  # outcomes that no claim carries now
            try:
                await asyncio.wait_for(self._wake.wait(), poll * random.uniform(0.8, 1.0))
            except TimeoutError:
                self._maybe_more = True  # poll: a NOTIFY may have been missed
            self._wake.clear()

    async def _claim(self, want: int) -> list[Claimed]:
        """Claim up to ``want``, writing the pending outcomes in the same statement."""
        async with self.completer.carried() as outcomes:
            claimed, verdicts = await self.claimer.run_once(want, outcomes)
            if outcomes:
                self.completer.settle(outcomes, verdicts)
        return claimed

    def _hold(self, rows: list[Claimed]) -> None:
        """Take on freshly claimed attempts; they wait in the buffer for a slot."""
        holdings, debug = self.holdings, log.isEnabledFor(logging.DEBUG)
        for row in rows:
            holdings.add(Held(row, TaskContext(row.id, row.attempt, row.task_name, row.queue)))
            if debug:
                log.debug(
                    "task_claimed task=%s attempt=%s queue=%s worker=%s",
                    row.id,
                    row.attempt,
                    row.queue,
                    self.id,
                )
        holdings.counts["task_claimed"] += len(rows)
        self.metrics.claimed(rows)
        self.buffer.extend(rows)

    def _settled(self, event: str, outcome: Outcome, held: Held | None) -> None:
        """The completer wrote an outcome: count it, and log it if it is a failure."""
        self.metrics.settled(event, held)
        self.tasklog.settled(event, outcome, held)

    def _fill(self) -> None:
        """Start prefetched tasks while slots are free."""
        while self.buffer and self.holdings.running() < self.config.concurrency:
            row = self.buffer.popleft()
            held = self.holdings.held.get(row.id)
            if held is None or held.claimed.attempt != row.attempt:
                continue  # lost while it waited: nothing to run
            self.holdings.start(held)
            runner = asyncio.create_task(self._run_task(row, held), name=f"task-{row.id}")
            self._runners[(row.id, row.attempt)] = runner

    async def _run_task(self, row: Claimed, held: Held) -> None:
        try:
            task = self.registry.tasks[row.task_name]
            on_thread = None if task.is_async else held.set_thread
            started = time.monotonic()
            try:
                with self.metrics.span(row):
                    outcome = await execute(
                        task, row, held.context, self.pool, on_thread, self.processes
                    )
            finally:
                self.metrics.observe(row, time.monotonic() - started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours must not strand the task as running
            log.exception("task_runner_failed task=%s attempt=%s", row.id, row.attempt)
            outcome = Outcome(
                row.id, row.attempt, "error", error=f"worker error: {exc!r}", delay=1.0
            )
        finally:
            self._runners.pop((row.id, row.attempt), None)
            held.thread = None
        self.completer.submit(outcome)
        self._fill()
        self._wake.set()  # a slot is free

    def _on_lost(self, held: Held) -> None:
        """A held attempt was lost: a thread still running it no longer fills a slot."""
        if held.thread is not None:
            self.pool.abandon(held.thread)
        self._fill()

    def _release_waiting(self, count: int, why: str) -> int:
        """Hand back up to ``count`` prefetched tasks, newest first, spending no attempt."""
        released = 0
        while self.buffer and released < count:
            row = self.buffer.pop()
            held = self.holdings.held.get(row.id)
            if held is None or held.claimed.attempt != row.attempt:
                continue
            self.completer.submit(Outcome(row.id, row.attempt, "released"))
            released += 1
        if released:
            log.info("tasks_rebalanced worker=%s released=%d reason=%s", self.id, released, why)
        return released

    def cancel_task(self, task_id: int) -> None:
        """An operator cancelled ``task_id``: if this worker holds it, stop it now and
        record ``cancelled``. A running coroutine is cancelled; a thread is told
        through ``current().stop`` and left to finish on its own (threads cannot be
        killed), its slot freed at once."""
        held = self.holdings.held.get(task_id)
        if held is None or held.completing:
            return
        attempt = held.claimed.attempt
        held.context.mark_cancelled()
        runner = self._runners.pop((task_id, attempt), None)
        if runner is not None:
            runner.cancel()
        if held.thread is not None:
            self.pool.abandon(held.thread)
        self.buffer = deque(r for r in self.buffer if r.id != task_id)
        log.info("task_cancelling task=%s attempt=%s worker=%s", task_id, attempt, self.id)
        self.completer.submit(Outcome(task_id, attempt, "cancelled", error="cancelled"))
        self._fill()

    def _after_beat(self, beat: HeartbeatResult) -> None:
        for task_id in beat.cancel:
            self.cancel_task(task_id)
        if beat.drain and not self._draining:
            log.info("worker_drain_requested worker=%s", self.id)
            self.request_drain()
        self._rebalance(beat)

    def _rebalance(self, beat: HeartbeatResult) -> None:
        """After each heartbeat: while another worker has idle slots, hand back prefetched
        tasks it can start at once."""
        self._others_idle = beat.idle_elsewhere > 0
        if beat.idle_elsewhere > 0 and self.buffer:
            self._release_waiting(beat.idle_elsewhere, "idle capacity elsewhere")

    async def _watchdog(self) -> None:
        """Self-fence even while a heartbeat hangs: this loop never waits on the database."""
        while True:
            await asyncio.sleep(min(1.0, self.config.lease.total_seconds() / 10))
            self.heartbeat.check_self_fence()

    async def _unknown_loop(self, beat: Link, names: list[str]) -> None:
        """Report, once per name, queued tasks that no task of this registry can run."""
        while True:
            try:
                await self._report_unknown(beat, names)
            except Exception as exc:
                log.debug("unknown task check failed: %s", exc)
            await asyncio.sleep(UNKNOWN_CHECK_INTERVAL)

    async def _report_unknown(self, beat: Link, names: list[str]) -> None:
        rows = await beat.fetch(
            "tasks_unknown", {"queues": list(self.config.queues), "names": names}
        )
        for (name,) in rows:
            if name not in self._unknown_reported:
                self._unknown_reported.add(name)
                log.error(
                    "task_unknown name=%s: queued in %s but not registered in this worker's "
                    "registry; it stays queued until a worker that registers it runs",
                    name,
                    ",".join(self.config.queues),
                )

    # -- drain ------------------------------------------------------------------------

    async def _drain(self, beat: Link) -> None:
        self.completer.carrier = None  # no more claims: the completer writes on its own
        self.completer.kick()
        self.heartbeat.state = "draining"
        try:
            await beat.fetch("worker_set_state", {"worker": self.id, "state": "draining"})
        except Exception as exc:
            log.warning("worker_state_failed error=%s", exc)
        self._release_waiting(len(self.buffer), "draining")
        deadline = time.monotonic() + self.config.drain_timeout.total_seconds()
        while self._runners and time.monotonic() < deadline:
            await asyncio.wait(list(self._runners.values()), timeout=deadline - time.monotonic())
        released = 0
        for (task_id, attempt), runner in list(self._runners.items()):
            held = self.holdings.held.get(task_id)
            runner.cancel()
            if held is None or held.claimed.attempt != attempt:
                continue
            held.context.mark_stop()
            self.completer.submit(Outcome(task_id, attempt, "released"))
            released += 1
        if self._runners:
            await asyncio.wait(list(self._runners.values()), timeout=1.0)
        flushed = await self.completer.flush(timeout=max(5.0, self.config.lease.total_seconds()))
        log.info(
            "worker_drained worker=%s released=%d outcomes_written=%s", self.id, released, flushed
        )


def run_worker(
    registry: Registry,
    config: WorkerConfig,
    *,
    dsn: str | None = None,
    surfaces: SurfacesConfig | None = None,
) -> int:
    """Run a worker in this process until it is drained; returns the exit code."""
    return asyncio.run(Worker(registry, config, dsn=dsn, surfaces=surfaces).run())
