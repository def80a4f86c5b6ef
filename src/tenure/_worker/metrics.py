"""Worker metrics in the Prometheus text format.

Rules:
- Counters are named after the events of :mod:`tenure.logs`: the event
  ``task_succeeded`` counts as ``tenure_tasks_succeeded_total{queue,task}``.
- Per queue and task counters are bumped where the claim loop takes a task and where
  it settles an outcome; process-wide counters (leases lost, fenced writes,
  takeovers) and gauges are read from a :class:`~tenure._worker.status.WorkerStatus`
  snapshot at scrape time, so a scrape never changes what it reads.
- Queue depth and oldest age come from one small query over the hot table, and each
  schedule's next and last tick from one over the schedules, cached for a few
  seconds, on a connection of its own opened at the first scrape (the worker hands
  over that store once it knows the database: :meth:`Metrics.use`).
- A task run is wrapped in an OpenTelemetry span when ``opentelemetry-api`` is
  importable; tenure does not depend on it.
"""

from __future__ import annotations

import importlib
import logging
import math
from bisect import bisect_left
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from tenure._store.rate_rows import RateRow
from tenure._store.worker import AsyncStore
from tenure._store.worker_rows import Claimed, QueueDepth, ScheduleState
from tenure._worker.clock import MONOTONIC, Clock
from tenure._worker.state import Held
from tenure._worker.status import WorkerStatus
from tenure.states import Event

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
QUEUE_CACHE_SECONDS = 5.0

#: Per queue and task counters: event name -> (metric name, help).
LABELED: dict[Event, tuple[str, str]] = {
    Event.TASK_CLAIMED: ("tenure_tasks_claimed_total", "Leases this worker took on tasks."),
    Event.TASK_SUCCEEDED: ("tenure_tasks_succeeded_total", "Attempts that ended in success."),
    Event.TASK_FAILED: ("tenure_tasks_failed_total", "Attempts that failed with no retry left."),
    Event.TASK_RETRIED: ("tenure_tasks_retried_total", "Attempts that failed and were retried."),
    Event.TASK_RELEASED: (
        "tenure_tasks_released_total",
        "Tasks handed back with no attempt spent.",
    ),
    Event.TASK_CANCELLED: ("tenure_tasks_cancelled_total", "Attempts stopped by an operator."),
}

#: Process-wide counters: (metric name, help, where the value is read).
PLAIN: tuple[tuple[str, str, str], ...] = (
    ("tenure_lease_lost_total", "Held attempts this worker learned it lost.", "lease_lost"),
    ("tenure_fenced_writes_total", "Outcome writes the database fenced out.", "fenced_writes"),
    (
        "tenure_outcomes_replaced_total",
        "Outcomes the database refused, recorded as an error that says why instead.",
        "outcomes_replaced",
    ),
    (
        "tenure_outcomes_dropped_total",
        "Outcomes that could not be recorded at all (the lease expires instead).",
        "outcomes_dropped",
    ),
)


def _otel_tracer() -> Any:
    try:
        trace = importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None
    return trace.get_tracer("tenure")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class Histogram:
    """Buckets, sum and count of one label set. Each run is counted in its own bucket
    (one search per run, which is on every task's path); a scrape sums them up."""

    own: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, seconds: float) -> None:
        self.own[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1

    def cumulative(self) -> list[int]:
        """Runs at or under each bound of DURATION_BUCKETS, as a scrape shows them."""
        return list(accumulate(self.own[:-1]))


_NO_SPAN = nullcontext()


class Metrics:
    """The counters one worker process keeps, and their rendering for a scrape."""

    def __init__(self, clock: Clock = MONOTONIC) -> None:
        self.labeled: Counter[tuple[str, str, str]] = Counter()  # (event, queue, task)
        self.durations: dict[tuple[str, str], Histogram] = {}
        self.clock = clock
        self._tracer = _otel_tracer()
        self._store: AsyncStore | None = None
        self._queues: list[QueueDepth] = []
        self._schedules: list[ScheduleState] = []
        self._rates: list[RateRow] = []
        self._queues_at = -math.inf

    # -- recording (called from the claim loop and the task runner) ------------------

    def claimed(self, rows: list[Claimed]) -> None:
        self.labeled.update(("task_claimed", row.queue, row.task_name) for row in rows)

    def settled(self, event: Event, held: Held | None) -> None:
        """The claim loop wrote an outcome; ``held`` is None if it was no longer held."""
        if event in LABELED and held is not None:
            self.labeled[(event, held.claimed.queue, held.claimed.task_name)] += 1

    def span(self, row: Claimed) -> AbstractContextManager[Any]:
        """A trace span for one task run when OpenTelemetry is present, else a no-op."""
        if self._tracer is None:
            return _NO_SPAN
        return self._tracer.start_as_current_span(  # type: ignore[no-any-return]
            f"tenure.task {row.task_name}",
            attributes={
                "tenure.task_id": row.id,
                "tenure.task_name": row.task_name,
                "tenure.queue": row.queue,
                "tenure.attempt": row.attempt,
            },
        )

    def observe(self, row: Claimed, seconds: float) -> None:
        """Count one task run's duration."""
        key = (row.queue, row.task_name)
        histogram = self.durations.get(key)
        if histogram is None:
            histogram = self.durations[key] = Histogram()
        histogram.observe(seconds)

    # -- queue depth ---------------------------------------------------------------

    def use(self, store: AsyncStore) -> None:
        """Read queue depths through ``store`` (it connects at the first scrape)."""
        self._store = store

    async def _queue_rows(self) -> list[QueueDepth]:
        if self._store is None or self.clock.now() - self._queues_at < QUEUE_CACHE_SECONDS:
            return self._queues  # not connected yet, or read a moment ago
        try:
            self._queues = await self._store.queue_depths()
            self._schedules = await self._store.schedule_states()
            self._rates = await self._store.rate_states()
            self._queues_at = self.clock.now()
        except Exception as exc:
            log.debug("metrics_queue_depth_failed error=%s", exc)
        return self._queues

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    # -- rendering -------------------------------------------------------------------

    async def render(self, status: WorkerStatus) -> str:
        """The whole scrape, in the Prometheus text exposition format (0.0.4)."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        for event, (name, help_text) in LABELED.items():
            family(name, "counter", help_text)
            for (ev, queue, task), value in sorted(self.labeled.items()):
                if ev == event:
                    out.append(f"{name}{_labels(queue=queue, task=task)} {value}")
        for name, help_text, key in PLAIN:
            family(name, "counter", help_text)
            out.append(f"{name} {status.events.get(key, 0)}")
        family(
            "tenure_takeovers_total",
            "counter",
            "Expired leases this worker's reaper turned back into work (dead or cut-off owners).",
        )
        out.append(f"tenure_takeovers_total {status.takeovers}")
        family(
            "tenure_tasks_quarantined_total",
            "counter",
            "Tasks this worker's reaper quarantined after too many expired leases.",
        )
        out.append(f"tenure_tasks_quarantined_total {status.quarantined}")

        name = "tenure_task_duration_seconds"
        family(name, "histogram", "Run time of task attempts on this worker.")
        for (queue, task), hist in sorted(self.durations.items()):
            for bound, count in zip(DURATION_BUCKETS, hist.cumulative(), strict=True):
                labels = _labels(queue=queue, task=task, le=_num(bound))
                out.append(f"{name}_bucket{labels} {count}")
            out.append(f"{name}_bucket{_labels(queue=queue, task=task, le='+Inf')} {hist.n}")
            out.append(f"{name}_sum{_labels(queue=queue, task=task)} {_num(hist.total)}")
            out.append(f"{name}_count{_labels(queue=queue, task=task)} {hist.n}")

        family("tenure_leases_held", "gauge", "Leases this worker holds (running or prefetched).")
        out.append(f"tenure_leases_held {status.leases_held}")
        family("tenure_tasks_running", "gauge", "Attempts running on this worker now.")
        out.append(f"tenure_tasks_running {status.running}")
        family(
            "tenure_heartbeat_lag_seconds",
            "gauge",
            "Seconds since this worker's last successful lease renewal was sent.",
        )
        out.append(f"tenure_heartbeat_lag_seconds {status.heartbeat_lag:.3f}")
        family("tenure_outcomes_pending", "gauge", "Outcomes finished here and not yet written.")
        out.append(f"tenure_outcomes_pending {status.outcomes_pending}")
        family(
            "tenure_outcomes_stalled_seconds",
            "gauge",
            "Seconds outcomes have waited with no write settling any (0 when none wait).",
        )
        out.append(f"tenure_outcomes_stalled_seconds {status.outcomes_stalled:.3f}")
        family("tenure_worker_ready", "gauge", "1 while the worker claims work (see /readyz).")
        out.append(f"tenure_worker_ready {int(status.readiness()[0])}")

        rows = await self._queue_rows()
        family("tenure_queue_depth", "gauge", "Tasks due and waiting in each queue.")
        for q in rows:
            out.append(f"tenure_queue_depth{_labels(queue=q.queue)} {q.queued}")
        family("tenure_queue_scheduled", "gauge", "Tasks waiting for a later time in each queue.")
        for q in rows:
            out.append(f"tenure_queue_scheduled{_labels(queue=q.queue)} {q.scheduled}")
        family("tenure_queue_running", "gauge", "Tasks running in each queue, fleet-wide.")
        for q in rows:
            out.append(f"tenure_queue_running{_labels(queue=q.queue)} {q.running}")
        family(
            "tenure_queue_oldest_age_seconds",
            "gauge",
            "Age of the oldest due task waiting in each queue (0 when none waits).",
        )
        for q in rows:
            age = q.oldest_age if q.oldest_age is not None else 0.0
            out.append(f"tenure_queue_oldest_age_seconds{_labels(queue=q.queue)} {age:.3f}")
        self._render_schedules(status, family, out)
        self._render_rates(family, out)
        return "\n".join(out) + "\n"

    def _render_rates(self, family: Any, out: list[str]) -> None:
        """Each rate limit in force: its rate, the fewest tokens its buckets hold, what
        they spent of late, how far a task slowed them, and 1 while it holds work back."""
        gauges = (
            ("tenure_rate_limit_per_second", "The rate of each rate limit in force.",
             lambda r: r.per_second),
            ("tenure_rate_tokens", "The fewest units any bucket of each rate limit holds.",
             lambda r: r.tokens),
            ("tenure_rate_recent_per_second", "Units each rate limit's buckets spent per "
             "second over about the last 10 s.", lambda r: r.recent),
            ("tenure_rate_slowed_to", "The share of its rate a task's slow_down left each "
             "rate limit (1: not slowed).", lambda r: r.slowed_to),
            ("tenure_rate_holding_back", "1 while a rate limit held work back in the last "
             "5 s (its queue waits on the rate, it is not stuck).",
             lambda r: int(r.held_queue is not None)),
        )  # fmt: skip
        for name, help_text, value in gauges:
            family(name, "gauge", help_text)
            for r in self._rates:
                labels = _labels(scope=r.scope, name=r.name, kind=r.kind, key=r.key)
                out.append(f"{name}{labels} {float(value(r)):g}")

    def _render_schedules(self, status: WorkerStatus, family: Any, out: list[str]) -> None:
        family(
            "tenure_schedule_ticks_total",
            "counter",
            "Ticks this worker's scheduler recorded: sent, triggered or skipped_running.",
        )
        for outcome in ("sent", "triggered", "skipped_running"):
            value = status.schedule_ticks.get(outcome, 0)
            out.append(f"tenure_schedule_ticks_total{_labels(outcome=outcome)} {value}")
        states = self._schedules
        family(
            "tenure_schedule_next_tick_seconds",
            "gauge",
            "Seconds until each schedule's next tick (negative: overdue); absent while paused.",
        )
        for s in states:
            if s.next_in is not None:
                out.append(f"tenure_schedule_next_tick_seconds{_labels(schedule=s.name)} "
                           f"{s.next_in:.3f}")  # fmt: skip
        family(
            "tenure_schedule_last_tick_timestamp_seconds",
            "gauge",
            "Unix time of each schedule's last tick sent or skipped.",
        )
        for s in states:
            if s.last_tick is not None:
                out.append(f"tenure_schedule_last_tick_timestamp_seconds"
                           f"{_labels(schedule=s.name)} {s.last_tick:.3f}")  # fmt: skip
        family(
            "tenure_schedule_missed_ticks_total",
            "counter",
            "Ticks each schedule's catch-up policy did not send after downtime.",
        )
        for s in states:
            out.append(f"tenure_schedule_missed_ticks_total{_labels(schedule=s.name)} {s.missed}")
        family("tenure_schedule_paused", "gauge", "1 while each schedule is paused.")
        for s in states:
            out.append(f"tenure_schedule_paused{_labels(schedule=s.name)} {int(s.paused)}")
