"""The invariant checker: what the database recorded, judged against tenure's guarantees.

It reads ``tasks``, ``finished_tasks``, ``attempts``, ``workers`` and the campaign's
``chaos_effects`` (one row per run of a task function) and returns a :class:`Report`.
Every figure comes from those tables; the driver only adds what it sent and when it
injected each fault.

Invariants (each must be 0):
- lost: sent tasks that are not finished once the campaign drained;
- overlapping leases: two attempts of one task whose ``[started_at, ended_at]`` overlap
  (an attempt still running counts until now);
- stale outcomes: a finished task whose outcome is not its last attempt's, or whose last
  attempt was recorded for a worker other than the one that ran it;
- misattributed attempts: any attempt recorded for a worker other than the one whose
  process ran it, or recorded as succeeded though it never ran (a write that slipped
  past the fence);
- same attempt run twice, and duplicate runs not explained by an attempt that ended
  without success (bounded duplication);
- limit violations: more attempts of the ``max_concurrency`` task overlapping than the
  limit.

All tables are read in one REPEATABLE READ snapshot, so a check during the run sees
each task in exactly one place. The driver adds what only it can see: violations the
checks during the run found, and supervised children that were killed and not restarted.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from chaos.app import LIMITED, LIMITED_MAX

FINAL_OUTCOMES = {
    "succeeded": {"succeeded"},
    "failed": {"error", "timed_out"},
    "cancelled": {"cancelled"},
    "quarantined": {"lease_expired"},
}


@dataclass(frozen=True)
class Fault:
    """One injected fault: its kind, when (database-comparable wall clock), whom it hit."""

    kind: str
    at: datetime
    pids: tuple[int, ...] = ()
    detail: str = ""
    until: datetime | None = None


@dataclass
class Delays:
    count: int = 0
    p50: float = 0.0
    p99: float = 0.0
    max: float = 0.0

    @staticmethod
    def of(values: list[float]) -> Delays:
        if not values:
            return Delays()
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, max(0, int(round(0.99 * len(ordered))) - 1))]
        return Delays(len(ordered), statistics.median(ordered), p99, ordered[-1])


@dataclass
class Report:
    """What the checker found. ``violations()`` lists every broken invariant."""

    sent: int = 0
    finished: int = 0
    finished_by_state: dict[str, int] = field(default_factory=dict)
    still_waiting_or_running: int = 0
    lost: int = 0
    attempts: int = 0
    lease_expired_attempts: int = 0
    runs: int = 0
    tasks_run_more_than_once: int = 0
    runs_per_task: dict[int, int] = field(default_factory=dict)
    extra_runs: int = 0
    extra_runs_after_lost_lease: int = 0
    unexplained_extra_runs: int = 0
    same_attempt_run_twice: int = 0
    overlapping_leases: int = 0
    stale_outcomes: int = 0
    misattributed_attempts: int = 0
    limit: int = LIMITED_MAX
    limit_max_overlap: int = 0
    limit_violations: int = 0
    takeover_first: Delays = field(default_factory=Delays)
    takeover_all: Delays = field(default_factory=Delays)
    takeover_limit_full: Delays = field(default_factory=Delays)
    takeover_db_down: Delays = field(default_factory=Delays)
    takeover_bound: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)
    final: bool = True
    midrun_checks: int = 0
    midrun_violations: list[str] = field(default_factory=list)
    children_killed: int = 0
    children_not_restarted: int = 0
    slowest_takeovers: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        found = []
        if self.final and self.lost:
            found.append(f"lost={self.lost}")
        for name in (
            "overlapping_leases",
            "stale_outcomes",
            "misattributed_attempts",
            "same_attempt_run_twice",
            "unexplained_extra_runs",
            "limit_violations",
            "children_not_restarted",
        ):
            if getattr(self, name):
                found.append(f"{name}={getattr(self, name)}")
        found += [f"mid-run {v}" for v in self.midrun_violations]
        if self.takeover_bound and self.takeover_first.p99 > self.takeover_bound:
            found.append(
                f"takeover p99 {self.takeover_first.p99:.2f}s > bound {self.takeover_bound:.2f}s"
            )
        return found

    @property
    def ok(self) -> bool:
        return not self.violations()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["runs_per_task"] = {str(k): v for k, v in self.runs_per_task.items()}
        data["violations"] = self.violations()
        return data


def _rows(conn: psycopg.Connection[Any], schema: str, query: str) -> list[tuple[Any, ...]]:
    return conn.execute(sql.SQL(query).format(s=sql.Identifier(schema))).fetchall()


def check(
    conn: psycopg.Connection[Any],
    schema: str,
    sent_ids: list[int] | None = None,
    faults: list[Fault] | None = None,
    *,
    takeover_bound: float = 0.0,
    final: bool = True,
    takeovers: bool = True,
) -> Report:
    """Judge the campaign in ``schema``. With ``final=False`` (during a run) running
    attempts count as open intervals and unfinished tasks are not lost; with
    ``takeovers=False`` takeover delays are not measured."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return _check(conn, schema, sent_ids, faults or [], takeover_bound, final, takeovers)


def _check(
    conn: psycopg.Connection[Any],
    schema: str,
    sent_ids: list[int] | None,
    faults: list[Fault],
    takeover_bound: float,
    final: bool,
    takeovers: bool,
) -> Report:
    rep = Report(final=final, takeover_bound=takeover_bound)
    now: datetime = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
    finished = {
        r[0]: (r[1], r[2], r[3])
        for r in _rows(conn, schema, "SELECT id, state, attempt, task_name FROM {s}.finished_tasks")
    }
    waiting = _rows(
        conn,
        schema,
        "SELECT id, state, attempt, lease_owner, started_at, task_name FROM {s}.tasks",
    )
    attempts = _rows(
        conn,
        schema,
        "SELECT task_id, attempt, worker_id, started_at, ended_at, outcome FROM {s}.attempts",
    )
    pid_of = dict(_rows(conn, schema, "SELECT id, pid FROM {s}.workers"))
    effects = _rows(conn, schema, "SELECT task_id, attempt, pid FROM {s}.chaos_effects")

    rep.finished = len(finished)
    rep.finished_by_state = dict(Counter(v[0] for v in finished.values()))
    rep.still_waiting_or_running = len(waiting)
    if sent_ids is not None:
        rep.sent = len(sent_ids)
        rep.lost = sum(1 for i in sent_ids if i not in finished)
    rep.attempts = len(attempts)
    rep.lease_expired_attempts = sum(1 for a in attempts if a[5] == "lease_expired")

    # Attempts per task, with running attempts as open intervals.
    by_task: dict[int, list[tuple[int, Any, datetime, datetime, str]]] = defaultdict(list)
    for task_id, attempt, worker, start, end, outcome in attempts:
        by_task[task_id].append((attempt, worker, start, end, outcome))
    for task_id, state, attempt, owner, start, _name in waiting:
        if state == "running" and start is not None:
            by_task[task_id].append((attempt, owner, start, now, "running"))
    for atts in by_task.values():
        atts.sort(key=lambda a: a[0])

    def note(text: str) -> None:
        if len(rep.examples) < 20:
            rep.examples.append(text)

    # One owner at a time.
    for task_id, atts in by_task.items():
        latest_end: datetime | None = None
        for attempt, _w, start, end, _o in atts:
            if latest_end is not None and start < latest_end:
                rep.overlapping_leases += 1
                note(f"task {task_id} attempt {attempt} started before an earlier one ended")
            latest_end = end if latest_end is None else max(latest_end, end)

    # Who really ran each attempt: the pids of its side-effect rows.
    ran_by: dict[tuple[int, int], list[int]] = defaultdict(list)
    for task_id, attempt, pid in effects:
        ran_by[(task_id, attempt)].append(pid)
    rep.runs = len(effects)
    rep.same_attempt_run_twice = sum(1 for pids in ran_by.values() if len(pids) > 1)
    for (task_id, attempt), pids in ran_by.items():
        if len(pids) > 1:
            note(f"task {task_id} attempt {attempt} ran {len(pids)} times")

    for task_id, atts in by_task.items():
        for attempt, worker, _s, _e, outcome in atts:
            pids = ran_by.get((task_id, attempt), [])
            if outcome == "succeeded" and not pids:
                rep.misattributed_attempts += 1  # every run leaves its row before it works
                note(f"task {task_id} attempt {attempt} succeeded but never ran")
                continue
            if outcome == "running" or not pids:
                continue
            if pid_of.get(worker) not in pids:
                rep.misattributed_attempts += 1
                note(
                    f"task {task_id} attempt {attempt} ({outcome}) recorded for worker pid "
                    f"{pid_of.get(worker)} but run by pid {pids}"
                )

    # Exactly one attempt's outcome, the last one's, became the task's.
    for task_id, (state, attempt, _name) in finished.items():
        atts = by_task.get(task_id, [])
        last = atts[-1] if atts else None
        if last is None or last[0] != attempt or last[4] not in FINAL_OUTCOMES[state]:
            rep.stale_outcomes += 1
            note(f"task {task_id} finished {state} at attempt {attempt}; last attempt {last}")
            continue
        pids = ran_by.get((task_id, attempt), [])
        if pids and pid_of.get(last[1]) not in pids and state != "quarantined":
            rep.stale_outcomes += 1
            note(f"task {task_id}: outcome written by pid {pid_of.get(last[1])}, ran in {pids}")

    # Bounded duplication: every extra run follows an attempt that ended without success.
    runs_of: Counter[int] = Counter(t for t, _a, _p in effects)
    rep.tasks_run_more_than_once = sum(1 for n in runs_of.values() if n > 1)
    rep.runs_per_task = dict(sorted(Counter(runs_of.values()).items()))
    for task_id, n in runs_of.items():
        if n <= 1:
            continue
        rep.extra_runs += n - 1
        atts = by_task.get(task_id, [])
        unfinished = [a for a in atts if a[4] not in ("succeeded", "running")]
        rep.extra_runs_after_lost_lease += min(
            n - 1, sum(1 for a in atts if a[4] == "lease_expired")
        )
        if n - 1 > len(unfinished):
            rep.unexplained_extra_runs += n - 1 - len(unfinished)
            note(f"task {task_id} ran {n} times with attempts {[(a[0], a[4]) for a in atts]}")

    # Fleet-wide limit: attempts of the limited task holding valid leases at once.
    limited_ids = {t for t, v in finished.items() if v[2] == LIMITED}
    limited_ids |= {w[0] for w in waiting if w[5] == LIMITED}
    events: list[tuple[datetime, int]] = []
    for task_id in limited_ids:
        for _a, _w, start, end, _o in by_task.get(task_id, []):
            events += [(start, 1), (end, -1)]
    events.sort(key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    level = 0
    for at, step in events:
        level += step
        if level > rep.limit_max_overlap:
            rep.limit_max_overlap = level
        if step == 1 and level > LIMITED_MAX:
            rep.limit_violations += 1
            note(f"{level} attempts of {LIMITED} held valid leases at {at.isoformat()}")

    # Takeovers: from the fault to the next attempt of each task the faulted worker held.
    rep.faults = dict(Counter(f.kind for f in faults))
    if not takeovers:
        return rep
    ids_of_pid: dict[int, set[Any]] = defaultdict(set)
    for wid, pid in pid_of.items():
        ids_of_pid[pid].add(wid)
    # Each expired attempt that was taken over: its task, its interval, the next attempt
    # (start, worker) and the task's crash count so far.
    expired_of: dict[Any, list[tuple[int, datetime, datetime, datetime, Any, int]]] = defaultdict(
        list
    )
    for task_id, atts in by_task.items():
        crashes = 0
        for i, (_a, worker, start, end, outcome) in enumerate(atts):
            if outcome != "lease_expired":
                continue
            crashes += 1
            if i + 1 < len(atts):
                nxt = atts[i + 1]
                expired_of[worker].append((task_id, start, end, nxt[2], nxt[1], crashes))
    # A limited task whose lease ended while the limit was full of other valid leases (a
    # second fault may hold them) cannot start before one of those ends: its takeover
    # waits for the limit, not for the lease protocol, and is measured apart.
    limited_spans = [
        (task_id, a[2], a[3]) for task_id in limited_ids for a in by_task.get(task_id, [])
    ]

    def limit_full(task_id: int, at: datetime) -> bool:
        others = sum(1 for t, s, e in limited_spans if t != task_id and s <= at < e)
        return others >= LIMITED_MAX

    # A takeover the database was down for (a restart between the fault and the next
    # attempt) waits for the server, not for the lease protocol: measured apart too.
    outages = [(f.at, f.until or f.at) for f in faults if f.kind == "pg_restart"]

    def db_down(since: datetime, until: datetime) -> bool:
        return any(down < until and up > since for down, up in outages)

    first: list[float] = []
    every: list[float] = []
    waited: list[float] = []
    db_waited: list[float] = []
    slow: list[tuple[float, str]] = []
    for fault in faults:
        for pid in fault.pids:
            for wid in ids_of_pid.get(pid, set()):
                for task_id, start, end, next_start, by, crashes in expired_of.get(wid, []):
                    if not start <= fault.at < end:
                        continue
                    delay = (next_start - fault.at).total_seconds()
                    every.append(delay)
                    if crashes == 1 and task_id in limited_ids and limit_full(task_id, end):
                        waited.append(delay)
                    elif crashes == 1 and db_down(fault.at, next_start):
                        db_waited.append(delay)
                    elif crashes == 1:
                        first.append(delay)
                        slow.append(
                            (
                                delay,
                                f"task {task_id}: {fault.kind} of pid {pid} at "
                                f"{fault.at.time()}, lease ended {end.time()}, next attempt "
                                f"by pid {pid_of.get(by)} at {next_start.time()} ({delay:.2f}s)",
                            )
                        )
    rep.slowest_takeovers = [text for _d, text in sorted(slow, reverse=True)[:5]]
    rep.takeover_first = Delays.of(first)
    rep.takeover_all = Delays.of(every)
    rep.takeover_limit_full = Delays.of(waited)
    rep.takeover_db_down = Delays.of(db_waited)
    return rep


def stale_leases(conn: psycopg.Connection[Any], schema: str) -> float:
    """During a run: seconds since the oldest expired lease that is still ``running``."""
    row = conn.execute(
        sql.SQL(
            "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(lease_expires_at)), 0) "
            "FROM {s}.tasks WHERE state = 'running' AND lease_expires_at < clock_timestamp()"
        ).format(s=sql.Identifier(schema))
    ).fetchone()
    return float(row[0]) if row else 0.0


def timeline(
    conn: psycopg.Connection[Any], schema: str, faults: list[Fault], wall0: float
) -> dict[str, Any]:
    """Seconds since ``wall0`` (a Unix time): successes per second, each fault's span, and
    each takeover (when the next attempt started, how long after the expired lease)."""
    ident = sql.Identifier(schema)
    rows = conn.execute(
        sql.SQL(
            "SELECT floor(extract(epoch FROM ended_at) - %s)::int AS s, count(*) "
            "FROM {s}.attempts WHERE outcome = 'succeeded' GROUP BY 1 ORDER BY 1"
        ).format(s=ident),
        (wall0,),
    ).fetchall()
    takeovers = conn.execute(
        sql.SQL(
            "SELECT extract(epoch FROM b.started_at) - %s, "
            "extract(epoch FROM b.started_at - a.ended_at) "
            "FROM {s}.attempts a JOIN {s}.attempts b "
            "ON b.task_id = a.task_id AND b.attempt = a.attempt + 1 "
            "WHERE a.outcome = 'lease_expired'"
        ).format(s=ident),
        (wall0,),
    ).fetchall()
    return {
        "throughput": [[int(s), int(n)] for s, n in rows],
        "faults": [
            [f.kind, f.at.timestamp() - wall0, (f.until or f.at).timestamp() - wall0]
            for f in faults
        ],
        "takeovers": [[float(t), float(d)] for t, d in takeovers],
    }
