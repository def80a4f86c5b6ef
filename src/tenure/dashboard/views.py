"""What the dashboard shows, read through the :class:`~tenure.client.Client`.

Every read is a named statement (``status_queues``, ``dashboard_*``) or a Client
method; nothing here builds SQL. Each function returns plain dictionaries the
templates lay out. Ages come from the database clock, like every other time in
tenure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tenure.client import (
    LATE_HEARTBEAT_SECONDS,
    Client,
    queue_fields,
    reports_live,
    standing_error,
    task_fields,
)
from tenure.logs import OUTCOME_EVENTS

HISTORY_MINUTES = 60
RETRYABLE = frozenset({"failed", "quarantined", "cancelled"})
CANCELLABLE = frozenset({"scheduled", "queued", "running"})


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


def _history(rows: list[tuple[Any, ...]], depth_now: dict[str, int]) -> dict[str, Sparkline]:
    """Per queue: finished per minute and depth at the end of each minute, oldest first.

    Depth is walked back from now: before a minute, depth was the depth after it,
    less what arrived in it, plus what finished in it.
    """
    arrived: dict[str, list[int]] = {}
    finished: dict[str, list[int]] = {}
    for queue, minutes_ago, came, done in rows:
        ago = int(minutes_ago)
        if not 0 <= ago < HISTORY_MINUTES:
            continue
        slot = HISTORY_MINUTES - 1 - ago
        arrived.setdefault(queue, [0] * HISTORY_MINUTES)[slot] += int(came)
        finished.setdefault(queue, [0] * HISTORY_MINUTES)[slot] += int(done)
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
    """Queues with their last hour, and the workers."""
    queues = client.queue_counts()
    throughput = {r[0]: (int(r[1]), int(r[2])) for r in client.execute("dashboard_throughput", {})}
    depth_now = {str(q[0]): int(q[1]) + int(q[2]) + int(q[3]) for q in queues}
    history = _history(client.execute("dashboard_history", {}), depth_now)
    queue_rows: list[dict[str, Any]] = []
    for q in queues:
        name = str(q[0])
        done, ok = throughput.get(name, (0, 0))
        fields = queue_fields(q)
        queue_rows.append(
            {
                **fields,
                "name": name,
                "oldest": age(fields["oldest_seconds"]),
                "limit": fields["max_concurrency"],
                "per_minute": done,
                "succeeded_per_minute": ok,
                "spark": history.get(name, Sparkline([0] * 60, [0] * 60)),
            }
        )
    worker_rows: list[dict[str, Any]] = []
    for w in client.execute("dashboard_workers", {"limit": 200}):
        heartbeat_age = float(w[7])
        # held and running are the worker's own report: not what a gone or late one does
        fresh = reports_live(w[3], heartbeat_age)
        worker_rows.append(
            {
                "id": str(w[0]),
                "short": str(w[0])[:8],
                "host": w[1],
                "pid": w[2],
                "state": w[3],
                "queues": ", ".join(w[4]),
                "concurrency": int(w[5]),
                "version": w[6],
                "heartbeat": age(heartbeat_age),
                "heartbeat_late": heartbeat_age > LATE_HEARTBEAT_SECONDS and w[3] != "gone",
                "uptime": age(float(w[8])),
                "reports_live": fresh,
                "held": int(w[9]) if fresh else None,
                "running": int(w[10]) if fresh else None,
                "last_held": int(w[9]),
                "last_running": int(w[10]),
                "drain_requested": bool(w[11]),
                "leases": int(w[12]),
                "outcomes_pending": int(w[13]),
                "outcomes_stalled": None if w[14] is None else age(float(w[14])),
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
    return {"queues": queue_rows, "workers": worker_rows, "totals": totals}


@dataclass(frozen=True)
class TaskFilters:
    """Validated filters of the task list; None matches everything."""

    queue: str | None = None
    state: str | None = None
    task_name: str | None = None
    partition_key: str | None = None
    before: int | None = None
    limit: int = 50

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
    rows = client.list_tasks(
        queue=filters.queue,
        state=filters.state,
        task_name=filters.task_name,
        partition_key=filters.partition_key,
        before=filters.before,
        limit=filters.limit,
    )
    tasks = [
        {
            **task_fields(r),
            "key": r[8] or "",
            "created": age((now - r[9]).total_seconds()) + " ago",
            "finished": "" if r[10] is None else age((now - r[10]).total_seconds()) + " ago",
            "error": _last_line(standing_error(r[3], r[11])),
            "retryable": r[3] in RETRYABLE,
            "cancellable": r[3] in CANCELLABLE,
        }
        for r in rows
    ]
    older = tasks[-1]["id"] if len(tasks) == filters.limit else None
    queues = sorted({str(q[0]) for q in client.queue_counts()})
    names = [str(r[0]) for r in client.execute("dashboard_task_names", {})]
    return {"tasks": tasks, "older": older, "queue_names": queues, "task_names": names}


def task_detail(client: Client, task_id: int, now: datetime) -> dict[str, Any]:
    """One task with every attempt; raises TaskNotFound."""
    info = client.get(task_id)
    attempts = []
    for a in client.attempts(task_id):
        attempts.append(
            {
                "attempt": a[0],
                "worker": str(a[1]),
                "worker_short": str(a[1])[:8],
                "started": a[2],
                "ended": a[3],
                "took": f"{(a[3] - a[2]).total_seconds():.3f}s",
                "outcome": a[4],
                "event": OUTCOME_EVENTS.get(a[4], a[4]),
                "error": a[5] or "",
                "error_line": _last_line(a[5]),
            }
        )
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
        "retryable": info.state in RETRYABLE,
        "cancellable": info.state in CANCELLABLE,
    }


def _last_line(text: str | None, width: int = 90) -> str:
    if not text or not text.strip():
        return ""
    line = text.strip().splitlines()[-1]
    return line if len(line) <= width else line[: width - 1] + "…"
