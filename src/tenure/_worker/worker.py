"""One worker process: the control plane that ties the loops together.

Start-up: resolve the DSN (retrying with backoff while the database is
unreachable), apply migrations, register the worker row, publish the registry's
fleet-wide limits, then start the loops: the claim loop, the heartbeat and its
watchdog, the reaper, promoter, vacuumer, unknown-task check and notifier. A
start-up failure that waiting cannot mend (a DSN that does not parse, no such
database or role, a refused login or schema, a bad setting, an embedded server that
cannot start) ends the worker with one line and exit code 1.

Drain (SIGTERM or SIGINT): stop claiming, let running attempts finish within the
drain timeout, hand back what is left (released: another worker takes it at once,
no attempt spent), mark the worker gone and return 0. A second signal exits at
once; leases then expire normally. A child of ``--processes`` takes a signal that
follows the first within two seconds as the same request: a group-wide signal
reaches it twice, directly and forwarded by its supervisor.

Connections: three per process — claims and outcomes, heartbeat and reaper, LISTEN —
and a fourth for the moment of a vacuum of the hot table (see the vacuumer).

Who owns what: the claim loop owns every attempt this process holds (the prefetch
buffer, the running attempts, the pending outcomes, :class:`Holdings`); the
heartbeat owns the link's health and the operator's drain request; this module owns
the lifecycle (start-up, signals, the drain's order, shutdown) and builds each part
from its own :class:`~tenure._store.worker.AsyncStore`. Observers (metrics, health,
the task log) read :meth:`Worker.status`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID, uuid4

import psycopg

from tenure._db import connect as dbconnect
from tenure._db.migrate import migrate
from tenure._maintenance.promoter import Promoter
from tenure._maintenance.reaper import Reaper
from tenure._maintenance.unknown_tasks import UnknownTasks
from tenure._maintenance.vacuumer import Vacuumer
from tenure._store.worker import AsyncStore
from tenure._store.worker_rows import Outcome
from tenure._version import __version__
from tenure._worker.claim_loop import ClaimLoop
from tenure._worker.clock import MONOTONIC, Clock
from tenure._worker.config import WorkerConfig
from tenure._worker.executor import execute
from tenure._worker.heartbeat import FenceWatch, Heartbeat
from tenure._worker.http import Surfaces, SurfacesConfig
from tenure._worker.lineage import START_FAILED
from tenure._worker.metrics import Metrics
from tenure._worker.notifier import CancelHints, Notifier
from tenure._worker.processes import ProcessPool
from tenure._worker.scheduler import Scheduler
from tenure._worker.service import Service
from tenure._worker.state import Held, Holdings
from tenure._worker.status import WorkerStatus
from tenure._worker.tasklog import TaskLog
from tenure._worker.threads import DaemonThreadPool
from tenure.errors import ConfigError, EmbeddedServerError, SchemaNotReady
from tenure.options import QueueOptions
from tenure.registry import Registry

log = logging.getLogger(__name__)

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


#: The store of each named part of a worker (``work``, ``heartbeat``, ``listen``, ...).
Stores = Callable[[str], AsyncStore]


@dataclass
class Parts:
    """The parts of a running worker, each on the store of its own connection."""

    claims: ClaimLoop
    heartbeat: Heartbeat
    reaper: Reaper
    scheduler: Scheduler
    loops: list[Service]  # started together, stopped together
    stores: list[AsyncStore]


class Worker:
    """Runs the tasks of one registry from the configured queues until drained.

    ``stores`` gives a database that is ready (its schema migrated) as the store of
    each named part; without it the worker resolves its DSN and migrates first.
    """

    def __init__(
        self,
        registry: Registry,
        config: WorkerConfig,
        *,
        dsn: str | None = None,
        surfaces: SurfacesConfig | None = None,
        stores: Stores | None = None,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.registry = registry
        self.config = config
        self.schema = registry.schema
        self.id: UUID = uuid4()
        self.clock = clock
        self._dsn = dsn
        self._stores = stores
        self.events: Counter[str] = Counter()  # event name -> times (the log's words)
        self.holdings = Holdings()
        self.pool = DaemonThreadPool(config.concurrency)
        self.processes = ProcessPool(config.process_slot_count, config.max_memory_per_child)
        self._stop = asyncio.Event()  # a drain was asked for
        self._draining = False
        self._signals = 0
        self._first_signal = 0.0
        self._supervised = "TENURE_SUPERVISED_SLOT" in os.environ
        self.ready = asyncio.Event()  # registered and claiming
        self.metrics = Metrics(clock)  # served on /metrics when a port is given
        summary = config.log_summary.total_seconds()
        self.tasklog = TaskLog(self.id, summary, self.status, clock=clock)
        self.parts: Parts | None = None
        self.surfaces_config = surfaces
        self.surfaces: Surfaces | None = None

    # -- what observers read ----------------------------------------------------------

    def status(self) -> WorkerStatus:
        """A snapshot of this worker for metrics, health checks and the task log."""
        lease = self.config.lease.total_seconds()
        parts = self.parts
        if parts is None:
            return WorkerStatus(draining=self._draining, lease=lease, events=dict(self.events))
        claims, beat, outcomes = parts.claims, parts.heartbeat, parts.claims.outcomes
        return WorkerStatus(
            started=self.ready.is_set(),
            draining=self._draining,
            fenced=beat.fenced,
            lease=lease,
            heartbeat_lag=self.clock.now() - beat.last_ok,
            leases_held=len(self.holdings),
            running=self.holdings.running(),
            prefetched=claims.prefetched(),
            outcomes_pending=len(outcomes),
            outcomes_stalled=outcomes.stalled_for(),
            outcomes_error=outcomes.last_error,
            events=dict(self.events),
            takeovers=parts.reaper.counts["lease_expired"],
            quarantined=parts.reaper.counts["task_quarantined"],
            schedule_ticks=dict(parts.scheduler.counts),
        )

    # -- control ----------------------------------------------------------------------

    def request_drain(self) -> None:
        """Begin a drain (what SIGTERM does)."""
        if not self._draining:
            log.info("worker_draining worker=%s", self.id)
        self._draining = True
        if self.parts is not None:
            self.parts.claims.stop_claiming()
        self._stop.set()

    def _on_signal(self, signum: int) -> None:
        now = self.clock.now()
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
                await self.clock.wait(self._stop, delay)
        raise asyncio.CancelledError

    def _migrate(self, dsn: str) -> None:
        conn = dbconnect.connect(dsn, "tenure-migrate")
        try:
            dbconnect.retry_sync(lambda: migrate(conn, self.schema), what="migrate")
        finally:
            conn.close()

    async def _publish(self, beat: AsyncStore, names: list[str]) -> None:
        """Register this worker's row and publish the registry's task limits, queue
        settings, rate limits and schedules for the fleet."""
        cfg = self.config
        await beat.register(
            worker=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=cfg.queues,
            concurrency=cfg.concurrency,
            version=__version__,
        )
        await beat.publish_limits([self.registry.tasks[n].options for n in names])
        queues = [
            self.registry.queue_options.get(q) or QueueOptions(name=q)
            for q in self.registry.queues()
        ]
        await beat.publish_queues(queues)
        await beat.flag_limited_running()
        await beat.publish_rates(
            [self.registry.tasks[n].options for n in names],
            list(self.registry.queue_options.values()),
        )
        changed, removed = await beat.publish_schedules(
            list(self.registry.schedules.values()), tasks=names
        )
        if changed:
            log.info("schedules_published worker=%s changed=%s", self.id, ",".join(changed))
        if removed:
            log.warning(
                "schedules_removed worker=%s removed=%s: no longer declared in the code",
                self.id,
                ",".join(removed),
            )

    def _build(
        self, work: AsyncStore, beat: AsyncStore, listen: AsyncStore, names: list[str]
    ) -> Parts:
        cfg, clock = self.config, self.clock
        claims = ClaimLoop(
            work,
            self.holdings,
            self.events,
            self.id,
            cfg,
            names,
            self._execute,
            self.pool,
            self.metrics,
            self.tasklog,
            clock,
        )
        heartbeat = Heartbeat(
            beat, self.holdings, claims, self.id, cfg.lease, cfg.heartbeat_interval, clock
        )
        gone_after = max(cfg.lease * 4, cfg.lease + cfg.drain_timeout)
        reaper = Reaper(beat, cfg.heartbeat_interval, gone_after, clock)
        hints = CancelHints(beat, self.holdings, self.id, claims.cancel, self.events, clock=clock)
        notifier = Notifier(listen, cfg.queues, claims.wake, hints, clock)
        scheduler = Scheduler(beat, self.registry, cfg.queues, names, cfg.poll_interval, clock)
        loops: list[Service] = [
            heartbeat,
            reaper,
            Promoter(beat, cfg.poll_interval, clock),
            Vacuumer(beat, clock=clock),
            self.tasklog,
            FenceWatch(heartbeat, clock),
            UnknownTasks(beat, cfg.queues, names, clock=clock),
            scheduler,
        ]
        if cfg.listen:
            loops.append(notifier)
        return Parts(claims, heartbeat, reaper, scheduler, loops, [work, beat, listen])

    # -- running ----------------------------------------------------------------------

    async def run(self) -> int:
        """Run until drained; returns the process exit code. Metrics and health
        endpoints, when configured, are served from start-up until the drain ends."""
        self.surfaces = await Surfaces(self.surfaces_config, self.status, self.metrics).start()
        try:
            return await self._run()
        finally:
            await self.surfaces.stop()
            await self.metrics.close()

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        stores = self._stores
        if stores is None:
            try:
                dsn = await self._prepare()
            except asyncio.CancelledError:
                return 0
            if dsn is None:
                return START_FAILED
            stores = _stores_of(dsn, self.schema)
        cfg = self.config
        names = sorted(self.registry.tasks)
        self.metrics.use(stores("metrics"))
        work, beat, listen = stores("work"), stores("heartbeat"), stores("listen")
        await self._publish(beat, names)
        parts = self.parts = self._build(work, beat, listen, names)
        for part in parts.loops:
            part.start()
        parts.claims.start()
        follower = asyncio.create_task(self._follow_drain_request(parts.heartbeat))
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
        if self._draining:  # asked before the parts were there
            parts.claims.stop_claiming()
        try:
            await self._stop.wait()
            await self._drain(parts)
        finally:
            follower.cancel()
            for part in parts.loops:
                await part.stop()
            await parts.claims.stop()
            try:
                await parts.heartbeat.store.set_state(worker=self.id, state="gone")
            except Exception as exc:
                log.warning("worker_state_failed error=%s", exc)
            for store in parts.stores:
                await store.close()
            self.pool.shutdown(wait=False)
            self.processes.close()
            self.tasklog.summarise()  # what happened since the last summary
        log.info("worker_stopped worker=%s counts=%s", self.id, dict(self.events))
        return 0

    async def _follow_drain_request(self, heartbeat: Heartbeat) -> None:
        """An operator's drain request reaches this worker through its heartbeat."""
        await heartbeat.drain_requested.wait()
        if not self._draining:
            log.info("worker_drain_requested worker=%s", self.id)
            self.request_drain()

    async def _execute(self, held: Held) -> Outcome:
        """Run one attempt to its end: the claim loop's runner."""
        row = held.claimed
        task = self.registry.tasks[row.task_name]
        on_thread = None if task.is_async else held.set_thread
        started = self.clock.now()
        try:
            with self.metrics.span(row):
                return await execute(task, row, held.context, self.pool, on_thread, self.processes)
        finally:
            self.metrics.observe(row, self.clock.now() - started)

    # -- drain ------------------------------------------------------------------------

    async def _drain(self, parts: Parts) -> None:
        parts.heartbeat.draining()
        try:
            await parts.heartbeat.store.set_state(worker=self.id, state="draining")
        except Exception as exc:
            log.warning("worker_state_failed error=%s", exc)
        cfg = self.config
        released, flushed = await parts.claims.drain(
            cfg.drain_timeout.total_seconds(), flush_timeout=max(5.0, cfg.lease.total_seconds())
        )
        log.info(
            "worker_drained worker=%s released=%d outcomes_written=%s", self.id, released, flushed
        )


def _stores_of(dsn: str, schema: str) -> Stores:
    def store(name: str) -> AsyncStore:
        return AsyncStore(dsn, schema, name)

    return store


def run_worker(
    registry: Registry,
    config: WorkerConfig,
    *,
    dsn: str | None = None,
    surfaces: SurfacesConfig | None = None,
) -> int:
    """Run a worker in this process until it is drained; returns the exit code."""
    return asyncio.run(Worker(registry, config, dsn=dsn, surfaces=surfaces).run())
