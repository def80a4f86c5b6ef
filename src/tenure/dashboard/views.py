"""What the dashboard shows, read through the :class:`~tenure.client.Client`.

Every read is a Client method or one of its store's typed statements
(``client.store.dashboard_*``); nothing here knows SQL or a column's position. Each
function returns plain dictionaries the templates lay out, starting from the same
``as_json()`` of each row that ``--json`` prints. Ages come from the database
clock, like every other time in tenure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tenure._store.rows import MinuteCounts, TaskFilter
from tenure._untrusted import last_line
from tenure.client import Client
from tenure.states import CANCELLABLE_STATES, RETRYABLE_STATES, recorded_event

HISTORY_MINUTES = 60


def age(seconds: float | None) -> str:
    """``4s``, ``3m 10s``, ``2h 5m``, ``3d 4h``: short and sortable by eye."""
    if seconds is None:
        return "–"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


@dataclass(frozen=True)
class Sparkline:
    """Two series over the last hour, one point per minute, as SVG coordinates."""

    finished: list[int]
    depth: list[int]
    width: int = 180
    height: int = 32

    def _points(self, series: list[int]) -> str:
        top = max(max(series), 1)
        step = self.width / max(len(series) - 1, 1)
        return " ".join(
            f"{i * step:.1f},{self.height - 2 - (v / top) * (self.height - 4):.1f}"
            for i, v in enumerate(series)
        )

    @property
    def depth_points(self) -> str:
        return self._points(self.depth)

    @property
    def bars(self) -> list[tuple[float, float, float]]:
        """(x, y, height) of one bar per minute of finished tasks."""
        top = max(max(self.finished), 1)
        step = self.width / len(self.finished)
        out = []
        for i, v in enumerate(self.finished):
            h = (v / top) * (self.height - 4)
            out.append((i * step, self.height - h, h))
        return out

    @property
    def bar_width(self) -> float:
        return max(self.width / len(self.finished) - 0.6, 0.6)

    @property
    def peak(self) -> int:
        return max(self.finished)

    @property
    def peak_depth(self) -> int:
        return max(self.depth)


def _history(rows: list[MinuteCounts], depth_now: dict[str, int]) -> dict[str, Sparkline]:
    """Per queue: finished per minute and depth at the end of each minute, oldest first.

    Depth is walked back from now: before a minute, depth was the depth after it,
    less what arrived in it, plus what finished in it.
    """
    arrived: dict[str, list[int]] = {}
    finished: dict[str, list[int]] = {}
    for row in rows:
        if not 0 <= row.minutes_ago < HISTORY_MINUTES:
            continue
        slot = HISTORY_MINUTES - 1 - row.minutes_ago
        arrived.setdefault(row.queue, [0] * HISTORY_MINUTES)[slot] += row.arrived
        finished.setdefault(row.queue, [0] * HISTORY_MINUTES)[slot] += row.finished
    lines = {}
    for queue in set(arrived) | set(depth_now):
        came_in = arrived.get(queue, [0] * HISTORY_MINUTES)
        done_in = finished.get(queue, [0] * HISTORY_MINUTES)
        depth = [0] * HISTORY_MINUTES
        level = depth_now.get(queue, 0)
        for slot in range(HISTORY_MINUTES - 1, -1, -1):
            depth[slot] = max(level, 0)
            level = level - came_in[slot] + done_in[slot]
        lines[queue] = Sparkline(done_in, depth)
    return lines


def overview(client: Client) -> dict[str, Any]:
    """Queues with their last hour, the workers, and the server answering."""
    queues = client.queue_counts()
    throughput = {t.queue: t for t in client.store.dashboard_throughput()}
    history = _history(client.store.dashboard_history(), {q.queue: q.waiting for q in queues})
    queue_rows: list[dict[str, Any]] = []
    for q in queues:
        last_minute = throughput.get(q.queue)
        queue_rows.append(
            {
                **q.as_json(),
                "name": q.queue,
                "oldest": age(q.oldest_seconds),
                "limit": q.max_concurrency,
                "per_minute": last_minute.finished if last_minute else 0,
                "succeeded_per_minute": last_minute.succeeded if last_minute else 0,
                "spark": history.get(q.queue, Sparkline([0] * 60, [0] * 60)),
            }
        )
    worker_rows: list[dict[str, Any]] = []
    for w in client.store.dashboard_workers(limit=200):
        # held and running are the worker's own report: not what a gone or late one does
        report = w.report_at(w.heartbeat_age_seconds)
        worker_rows.append(
            {
                "id": w.id,
                "short": w.id[:8],
                "host": w.host,
                "pid": w.pid,
                "state": w.state,
                "queues": ", ".join(w.queues),
                "concurrency": w.concurrency,
                "version": w.version,
                "heartbeat": age(w.heartbeat_age_seconds),
                "heartbeat_late": w.heartbeat_late,
                "uptime": age(w.uptime_seconds),
                "reports_live": report.live,
                "held": w.held if report.live else None,
                "running": w.running if report.live else None,
                "last_held": w.held,
                "last_running": w.running,
                "drain_requested": w.drain_requested,
                "leases": w.leases,
                "outcomes_pending": w.outcomes_pending,
                "outcomes_stalled": None
                if w.outcomes_stalled_seconds is None
                else age(w.outcomes_stalled_seconds),
            }
        )
    live = [w for w in worker_rows if w["reports_live"]]
    totals = {
        "queued": sum(q["queued"] for q in queue_rows),
        "running": sum(q["running"] for q in queue_rows),
        "failed": sum(q["failed"] + q["quarantined"] for q in queue_rows),
        "per_minute": sum(q["per_minute"] for q in queue_rows),
        "workers": len(live),
        "slots": sum(w["concurrency"] for w in live),
        "busy": sum(w["running"] for w in live),
    }
    database = client.store.server_identity()
    rates = rate_rows(client)
    held = {r["held_queue"] for r in rates if r["held_queue"] is not None}
    for row in queue_rows:
        row["rate_limited"] = row["name"] in held
    return {
        "rates": rates,
        "queues": queue_rows,
        "workers": worker_rows,
        "totals": totals,
        "database": database,
        "schedules": schedule_rows(client),
    }


def rate_rows(client: Client) -> list[dict[str, Any]]:
    """Each rate limit in force: its rate, tokens, recent spend, and whether it holds
    a queue back or a task slowed it."""
    now = client.store.dashboard_now()
    rows = []
    for r in client.rates():
        left = r.slowed_left(now)
        rows.append({
            "limit": r.limit,
            "rate": r.rate,
            "tokens": f"{r.tokens:.1f}",
            "recent": r.recent_rate,
            "held_queue": r.held_queue,
            "slowed": None if left is None else f"{r.slowed_to:.0%} for {age(left)}",
            "source": r.source,
        })  # fmt: skip
    return rows


def schedule_rows(client: Client) -> list[dict[str, Any]]:
    """Each schedule: when it ticks, its next ticks, its last tick and that tick's task."""
    now = client.store.dashboard_now()
    return [
        {
            "name": r.name,
            "task": r.task_name,
            "when": r.when.describe(),
            "paused": r.paused,
            "triggered": r.triggered,
            "next": [t.astimezone().strftime("%Y-%m-%d %H:%M:%S") for t in r.upcoming(2, now)],
            "last_tick": age((now - r.last_tick).total_seconds()) if r.last_tick else None,
            "last_task_id": r.last_task_id,
            "last_task_state": r.last_task_state or ("finished" if r.last_task_id else None),
            "missed": r.missed,
            "source": r.source,
        }
        for r in client.schedules(limit=200)
    ]


@dataclass(frozen=True)
class TaskFilters(TaskFilter):
    """Validated filters of the task list, and the links that keep them."""

    def query(self, **override: Any) -> dict[str, str]:
        values = {
            "queue": self.queue,
            "state": self.state,
            "task": self.task_name,
            "key": self.partition_key,
            "before": self.before,
            "limit": self.limit if self.limit != 50 else None,
        }
        values.update(override)
        return {k: str(v) for k, v in values.items() if v is not None}


def task_list(client: Client, filters: TaskFilters, now: datetime) -> dict[str, Any]:
    rows = client.store.tasks_list(filters)
    tasks = [
        {
            **r.as_json(),
            "key": r.partition_key or "",
            "created": age((now - r.created_at).total_seconds()) + " ago",
            "finished": ""
            if r.finished_at is None
            else age((now - r.finished_at).total_seconds()) + " ago",
            "error": last_line(r.error, 90),
            "retryable": r.state in RETRYABLE_STATES,
            "cancellable": r.state in CANCELLABLE_STATES,
        }
        for r in rows
    ]
    older = tasks[-1]["id"] if len(tasks) == filters.limit else None
    queues = sorted({q.queue for q in client.queue_counts()})
    names = client.store.dashboard_task_names()
    return {"tasks": tasks, "older": older, "queue_names": queues, "task_names": names}


def task_detail(client: Client, task_id: int, now: datetime) -> dict[str, Any]:
    """One task with every attempt; raises TaskNotFound."""
    info = client.get(task_id)
    attempts = [
        {
            "attempt": a.attempt,
            "worker": a.worker_id,
            "worker_short": a.worker_id[:8],
            "started": a.started_at,
            "ended": a.ended_at,
            "took": f"{a.seconds:.3f}s",
            "outcome": a.outcome,
            "event": recorded_event(a.outcome),
            "error": a.error or "",
            "error_line": last_line(a.error, 90),
        }
        for a in client.attempts(task_id)
    ]
    return {
        "task": info,
        "last_error": info.error,
        "payload": json.dumps(info.payload, indent=2, sort_keys=True, default=str),
        "result": None
        if info.result is None
        else json.dumps(info.result, indent=2, sort_keys=True, default=str),
        "attempts": attempts,
        "created_ago": age((now - info.created_at).total_seconds()),
        "finished_ago": None
        if info.finished_at is None
        else age((now - info.finished_at).total_seconds()),
        "retryable": info.state in RETRYABLE_STATES,
        "cancellable": info.state in CANCELLABLE_STATES,
    }
