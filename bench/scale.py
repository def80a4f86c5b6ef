"""``make bench-scale``: a large fleet and a deep backlog on one database (issue 9).

**Large fleet.** ``--processes`` (64) ``tenure worker`` processes, ``--concurrency``
(2) slots each, drain a backlog of I/O-bound tasks (``--ms`` 50 ms sleeps). Over a
``--window`` (30 s) the harness counts finished tasks (throughput), heartbeat
statements (``workers.n_tup_upd``: each heartbeat updates its worker row once and
nothing else does while the fleet runs) and calls of the ``claim``, ``complete``,
``expire_leases`` and ``promote_due`` functions with their mean time
(``pg_stat_user_functions``, ``track_functions = pl`` set on the bench's database),
and samples ``pg_stat_activity`` ten times a second: backends waiting on a
heavyweight lock (``wait_event_type = 'Lock'``) and the connections of each worker
process (by ``application_name``, which names the pid). Then the backlog is removed
and single tasks are sent to the idle fleet to time pickup (claim ``started_at``
minus ``created_at``, both from the database clock), with every worker woken by
each send.

**Deep backlog.** In a database of its own: the claim statement timed
(``task_claim.sql`` in a rolled-back transaction, so the backlog stays as it is)
and EXPLAINed, the status counts and the unknown-task check timed, first with
10,000 queued tasks and no history, then with ``--queued`` (2,000,000) queued and
``--finished`` (5,000,000) finished tasks with one attempt each, loaded set-based
(``INSERT … SELECT generate_series``) and ANALYZEd. Then ``Client.prune`` deletes
the finished tasks older than 27 of their 30 days (a tenth) in batches, each its
own transaction; the longest batch is the longest any row lock was held.

Databases: the deep backlog runs on the system PostgreSQL at 127.0.0.1:5432 when it
answers, else the embedded server. The fleet needs processes × 3 connections; when
that server has fewer free, the fleet runs on a private embedded server
(``max_connections = 300``, unix socket, dropped afterwards) and says so. Each part
gets a fresh database, dropped afterwards. The machine may be shared: load averages
are printed with every figure. Exit status 1 only if the harness failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness as h  # noqa: E402
from bench.harness import console  # noqa: E402
from bench.pg_activity import Sampler, counters  # noqa: E402
from tenure._db import sqlfiles  # noqa: E402
from tenure._db.migrate import migrate  # noqa: E402

SCHEMA = "bench_scale"
APP = "bench.scale_tasks:reg"
CONNECTIONS_PER_PROCESS = 3  # work, heartbeat, listen

Row = tuple[str, str]  # (figure, value) for the report


@dataclass
class Report:
    """Figures in the order measured, and the load average beside each part."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plans: dict[str, str] = field(default_factory=dict)
    loads: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add(self, figure: str, value: str) -> None:
        self.rows.append((figure, value))
        console.print(f"  {figure}: [bold]{value}[/]")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def spread(values: list[float]) -> str:
    """p50 / p99 / max of durations in seconds, as milliseconds."""
    return (
        f"p50 {h.percentile(values, 50) * 1000:.1f} / p99 {h.percentile(values, 99) * 1000:.1f}"
        f" / max {max(values) * 1000:.1f} ms (n={len(values)})"
    )


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# -- databases -------------------------------------------------------------------------------


def free_connections(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as db:
        top = h.scalar(db, "SHOW max_connections")
        reserved = h.scalar(db, "SHOW superuser_reserved_connections")
        used = h.scalar(
            db,
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'",
        )
    return top - reserved - used


@contextmanager
def fleet_server(dsn: str, which: str, needed: int) -> Iterator[tuple[str, str]]:
    """``dsn`` if it has ``needed`` free connections, else a private embedded server."""
    free = free_connections(dsn)
    if free >= needed:
        yield dsn, f"{which} ({free} connections free)"
        return
    from tenure.embedded import EmbeddedServer

    base = Path(tempfile.mkdtemp(prefix="tenure-bench-scale-"))
    base.chmod(0o755)  # as root the server runs as its own user, which must reach it
    server = EmbeddedServer(base / "pg")
    try:
        private = server.join()
        yield (
            private,
            f"private embedded PostgreSQL, max_connections 300 ({which} has {free} free "
            f"connections, the fleet needs {needed})",
        )
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def prepare(url: str) -> None:
    """Migrate the bench schema and count SQL function calls in this database."""
    with psycopg.connect(url, autocommit=True) as db:
        name = db.execute("SELECT current_database()").fetchone()
        assert name is not None
        db.execute(f"ALTER DATABASE \"{name[0]}\" SET track_functions = 'pl'")
        migrate(db, SCHEMA)


def task_defaults() -> dict[str, Any]:
    from bench.scale_tasks import io_task

    opts = io_task.options
    return {"name": opts.name, "max_attempts": opts.max_attempts, "max_crashes": opts.max_crashes}


def load_queued(db: psycopg.Connection[Any], first: int, last: int, ms_each: float) -> None:
    """Queued tasks ``first``..``last`` of io_task in one set-based statement: 50
    partition keys served round-robin (vtime), every 100th of a retired task name."""
    db.execute(
        f"""INSERT INTO {SCHEMA}.tasks (task_name, queue, payload, partition_key, max_attempts,
                                       max_crashes, vtime)
            SELECT CASE WHEN g %% 100 = 0 THEN 'retired.task' ELSE %(name)s END, 'default',
                   jsonb_build_object('ms', %(ms)s::float), 'tenant-' || g %% 50,
                   %(max_attempts)s, %(max_crashes)s, g / 50
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) g""",
        {**task_defaults(), "first": first, "last": last, "ms": ms_each},
    )


def load_finished(db: psycopg.Connection[Any], first: int, last: int) -> None:
    """Finished tasks (1 % failed) spread evenly over 30 days, one attempt each."""
    params = {**task_defaults(), "first": first, "last": last}
    db.execute(
        f"""INSERT INTO {SCHEMA}.finished_tasks (id, task_name, queue, payload, priority, state,
                                                attempt, errors, crashes, created_at,
                                                finished_at, max_attempts, max_crashes)
            SELECT -g, %(name)s, 'default', '{{"ms": 50}}', 0,
                   CASE WHEN g %% 100 = 0 THEN 'failed' ELSE 'succeeded' END, 1,
                   (g %% 100 = 0)::int, 0, ts - interval '1 second', ts, %(max_attempts)s,
                   %(max_crashes)s
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) g,
                 LATERAL (SELECT now() - (g %% 3000) * interval '864 seconds' AS ts) t""",
        params,
    )
    db.execute(
        f"""INSERT INTO {SCHEMA}.attempts (task_id, attempt, worker_id, started_at, ended_at,
                                          outcome)
            SELECT f.id, 1, '00000000-0000-0000-0000-000000000000', f.created_at,
                   f.finished_at,
                   CASE WHEN f.state = 'failed' THEN 'error' ELSE 'succeeded' END
            FROM {SCHEMA}.finished_tasks f WHERE f.id BETWEEN -%(last)s AND -%(first)s""",
        params,
    )


# -- part 1: a large fleet -------------------------------------------------------------------


def large_fleet(dsn: str, which: str, args: argparse.Namespace, report: Report) -> None:
    n = args.processes
    with (
        fleet_server(dsn, which, n * CONNECTIONS_PER_PROCESS + 10) as (server, where),
        h.fresh_database(server, "tenure_bench_fleet") as url,
    ):
        report.add("fleet: database", where)
        prepare(url)
        slots = n * args.concurrency
        ceiling = slots * 1000 / args.ms
        backlog = int(ceiling * (args.window + 120))
        with psycopg.connect(url, autocommit=True) as db:
            _, took = timed(load_queued, db, 1, backlog, args.ms)
            db.execute(f"DELETE FROM {SCHEMA}.tasks WHERE task_name = 'retired.task'")
            db.execute(f"ANALYZE {SCHEMA}.tasks")
            console.print(f"  backlog of {backlog:,} tasks loaded in {took:.1f} s")
            flags = ["--concurrency", str(args.concurrency), "--lease", f"{args.lease}s"]
            report.add(
                "fleet: shape",
                f"{n} processes × {args.concurrency} slots ({' '.join(flags)}), "
                f"{args.ms:g} ms tasks, ceiling {ceiling:.0f}/s",
            )
            with h.fleet("scale-fleet") as fleet:
                env = h.tenure_env(url, SCHEMA)
                t_start = time.monotonic()
                for _ in range(n):
                    fleet.start(h.tenure_worker_cmd(flags, app=APP), env)
                active = f"SELECT count(*) FROM {SCHEMA}.workers WHERE state = 'active'"
                while h.scalar(db, active) < n:
                    fleet.check_alive()
                    if time.monotonic() - t_start > args.start_timeout:
                        raise h.HarnessError(f"{n} workers not active after {args.start_timeout} s")
                    time.sleep(0.2)
                report.add("fleet: all workers active after", f"{time.monotonic() - t_start:.1f} s")
                time.sleep(args.warmup)
                steady(url, db, fleet, args, report)
                pickup(url, db, fleet, args, report)


def steady(
    url: str, db: psycopg.Connection[Any], fleet: h.Fleet, args: argparse.Namespace, report: Report
) -> None:
    finished = f"SELECT count(*) FROM {SCHEMA}.finished_tasks"
    with Sampler(url) as seen:
        c0, f0, t0 = counters(db, SCHEMA), h.scalar(db, finished), time.monotonic()
        load0 = h.load()
        time.sleep(args.window)
        c1, f1, t1 = counters(db, SCHEMA), h.scalar(db, finished), time.monotonic()
    fleet.check_alive()
    report.loads["large fleet, steady window"] = (load0, h.load())
    span = t1 - t0
    done = f1 - f0
    report.add("fleet: throughput", f"{done / span:.0f} tasks/s ({done:,} in {span:.1f} s)")
    left = h.scalar(db, f"SELECT count(*) FROM {SCHEMA}.tasks WHERE state = 'queued'")
    if left == 0:
        report.notes.append("the fleet's backlog ran dry inside the window: raise it")

    def delta(fn: str) -> tuple[int, float]:
        a, b = c0.get(fn, (0, 0.0)), c1.get(fn, (0, 0.0))
        return b[0] - a[0], b[1] - a[1]

    calls, total = delta("claim")
    report.add(
        "fleet: claim statements",
        f"{calls / span:.0f}/s, mean {total / max(calls, 1):.2f} ms in the database, "
        f"{done / max(calls, 1):.1f} tasks per claim",
    )
    calls, total = delta("complete")
    report.add(
        "fleet: complete statements", f"{calls / span:.0f}/s, mean {total / max(calls, 1):.2f} ms"
    )
    beat_every = args.lease / 3
    expected = args.processes * span / beat_every
    beats, _ = delta("heartbeat")
    report.add(
        "fleet: heartbeat statements",
        f"{beats} in {span:.0f} s = {beats / args.processes / span * beat_every:.2f} per worker "
        f"per {beat_every:g} s interval (expected {expected:.0f}); "
        f"{beats / max(done, 1) * 1000:.2f} per 1,000 tasks",
    )
    calls, _ = delta("expire_leases")
    report.add(
        "fleet: reaper passes (expire_leases)",
        f"{calls} = {calls / args.processes / span * beat_every:.2f} per worker per interval",
    )
    calls, _ = delta("promote_due")
    report.add(
        "fleet: promoter passes (promote_due)",
        f"{calls / args.processes / span:.2f} per worker per s",
    )
    report.add(
        "fleet: lock waits (pg_stat_activity, 10 Hz)",
        f"{seen.lock_waits} backend-samples waiting on a lock in {seen.samples} samples "
        f"(most at once {seen.lock_waits_max}; {seen.active} active backend-samples"
        + (f"; kinds {', '.join(sorted(seen.lock_kinds))}" if seen.lock_kinds else "")
        + ")",
    )
    if seen.waiters:
        report.add(
            "fleet: who waited on whom (connection, statement, lock)",
            ", ".join(f"{who} ×{n}" for who, n in seen.waiters.most_common(4)),
        )
    report.add(
        "fleet: connections",
        f"at most {seen.per_process_max} per process (budget {CONNECTIONS_PER_PROCESS}), "
        f"{seen.connections_max} in all for {args.processes} processes",
    )


def pickup(
    url: str, db: psycopg.Connection[Any], fleet: h.Fleet, args: argparse.Namespace, report: Report
) -> None:
    """Empty the queue, then send single tasks to the idle fleet and time their pickup."""
    db.execute(f"DELETE FROM {SCHEMA}.tasks WHERE state <> 'running'")
    running = f"SELECT count(*) FROM {SCHEMA}.tasks"
    deadline = time.monotonic() + 30
    while h.scalar(db, running) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    from bench.scale_tasks import io_task
    from tenure.client import Client

    sender = Client(url, schema=SCHEMA)
    ids: list[int] = []
    c0 = counters(db, SCHEMA)
    try:
        with Sampler(url) as seen:
            load0 = h.load()
            for _ in range(args.pickups):
                ids.append(sender.send(io_task.options, '{"ms": 1}'))
                time.sleep(1 / args.pickup_rate)
            time.sleep(2)
    finally:
        sender.close()
    fleet.check_alive()
    report.loads["large fleet, pickup"] = (load0, h.load())
    rows = db.execute(
        f"""SELECT extract(epoch FROM a.started_at - f.created_at)
            FROM {SCHEMA}.finished_tasks f JOIN {SCHEMA}.attempts a
              ON a.task_id = f.id AND a.attempt = 1
            WHERE f.id = ANY (%s)""",
        (ids,),
    ).fetchall()
    waits = [float(r[0]) for r in rows]
    if len(waits) < len(ids):
        report.notes.append(f"pickup: only {len(waits)} of {len(ids)} probe tasks finished")
    claims = counters(db, SCHEMA)["claim"][0] - c0.get("claim", (0, 0.0))[0]
    report.add(
        f"fleet: pickup by an idle fleet ({args.pickup_rate:g} sends/s)",
        f"{spread(waits)}; {claims / max(len(ids), 1):.0f} claim statements per task "
        f"(every worker is woken), {seen.lock_waits} lock-wait samples",
    )


# -- part 2: a deep backlog ------------------------------------------------------------------


CLAIM_PICK = f"""
SELECT t.id FROM {SCHEMA}.tasks t
WHERE t.state = 'queued' AND NOT t.limited AND t.queue = 'default'
  AND t.task_name = ANY (%(names)s::text[])
ORDER BY t.priority DESC, t.vtime, t.id
LIMIT 10
FOR UPDATE SKIP LOCKED"""


def claim_figures(db: psycopg.Connection[Any], probes: int) -> tuple[list[float], str]:
    """Timings of the claim statement (10 tasks, rolled back) and the plan of its pick."""
    names = [task_defaults()["name"]]
    params = {
        "worker": uuid.uuid4(),
        "queues": ["default"],
        "names": names,
        "limit": 10,
        "lease": timedelta(seconds=15),
        "start": 0,
    }
    claim = sqlfiles.query("task_claim", SCHEMA)
    times = []
    for _ in range(probes):
        with db.transaction(force_rollback=True):
            rows, took = timed(lambda: db.execute(claim, params).fetchall())
            if len(rows) != 10:
                raise h.HarnessError(f"the claim probe got {len(rows)} tasks, not 10")
            times.append(took)
    with db.transaction(force_rollback=True):
        db.execute("SET LOCAL enable_sort = off")  # as claim() runs it
        plan = db.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) " + CLAIM_PICK, {"names": names}
        ).fetchall()
    return times, "\n".join(str(r[0]) for r in plan)


def status_figures(url: str, label: str, report: Report) -> None:
    from tenure.client import Client

    client = Client(url, schema=SCHEMA)
    try:
        queues, took = timed(client.queue_counts)
        q = next(r for r in queues if r.queue == "default")
        marks = ["~" if q.queued_estimated else "", "~" if q.finished_estimated else ""]
        report.add(
            f"{label}: status queue counts",
            f"{ms(took)} (queued {marks[0]}{q.queued:,}, failed {marks[1]}{q.failed:,}; "
            "~ = estimate)",
        )
        keys, took = timed(client.key_counts, 10)
        report.add(
            f"{label}: status top keys",
            f"{ms(took)} ({'sampled estimates' if keys and keys[0].estimated else 'exact'})",
        )
        params = {"queues": ["default"], "names": [task_defaults()["name"]]}
        with psycopg.connect(url, autocommit=True) as conn:  # as the worker's check runs it
            unknown, took = timed(
                lambda: conn.execute(sqlfiles.query("tasks_unknown", SCHEMA), params).fetchall()
            )
        report.add(f"{label}: unknown-task check", f"{ms(took)} (found {[r[0] for r in unknown]})")
    finally:
        client.close()
    env = {**os.environ, "TENURE_DATABASE_URL": url, "PYTHONPATH": str(h.ROOT)}
    cli = [sys.executable, "-m", "tenure", "status", "--schema", SCHEMA]
    out, took = timed(subprocess.run, cli, env=env, capture_output=True, cwd=h.ROOT)
    if out.returncode != 0:
        raise h.HarnessError(f"tenure status failed: {out.stderr.decode()[-300:]}")
    report.add(f"{label}: `tenure status` wall time", f"{took:.2f} s (a fresh Python process)")


def deep_backlog(dsn: str, which: str, args: argparse.Namespace, report: Report) -> None:
    with h.fresh_database(dsn, "tenure_bench_deep") as url:
        report.add("deep: database", which)
        prepare(url)
        with psycopg.connect(url, autocommit=True) as db:
            load_queued(db, 1, 10_000, args.ms)
            db.execute(f"ANALYZE {SCHEMA}.tasks")
            times, plan = claim_figures(db, args.probes)
            report.plans["claim pick, 10,000 queued, no history"] = plan
            report.add("shallow (10,000 queued, 0 finished): claim of 10", spread(times))
            status_figures(url, "shallow", report)

            console.print(f"  loading {args.queued:,} queued and {args.finished:,} finished tasks")
            t0 = time.perf_counter()
            step = 1_000_000
            for first in range(10_001, args.queued + 1, step):
                load_queued(db, first, min(args.queued, first + step - 1), args.ms)
            for first in range(1, args.finished + 1, step):
                load_finished(db, first, min(args.finished, first + step - 1))
            for table in ("tasks", "finished_tasks", "attempts"):
                db.execute(f"ANALYZE {SCHEMA}.{table}")
            total = args.queued + 2 * args.finished
            took = time.perf_counter() - t0
            report.add(
                "deep: load (INSERT … SELECT generate_series, then ANALYZE)",
                f"{total:,} rows in {took:.0f} s ({total / took:,.0f} rows/s)",
            )
            load0 = h.load()
            times, plan = claim_figures(db, args.probes)
            report.plans[f"claim pick, {args.queued:,} queued, {args.finished:,} finished"] = plan
            report.add(
                f"deep ({args.queued:,} queued, {args.finished:,} finished): claim of 10",
                spread(times),
            )
            status_figures(url, "deep", report)
            _, took = timed(
                db.execute, f"SELECT queue, state, count(*) FROM {SCHEMA}.tasks GROUP BY 1, 2"
            )
            report.add("deep: an exact count(*) by queue and state, for comparison", ms(took))
            report.loads["deep backlog, measured"] = (load0, h.load())
            prune(url, db, report)
            autovacuum(db, report)


def prune(url: str, db: psycopg.Connection[Any], report: Report) -> None:
    from tenure.client import PRUNE_BATCH, Client

    client = Client(url, schema=SCHEMA)
    batches: list[float] = []
    load0 = h.load()
    try:
        deleted, took = timed(
            client.prune, timedelta(days=27), on_batch=lambda _n, s: batches.append(s)
        )
    finally:
        client.close()
    report.loads["deep backlog, prune"] = (load0, h.load())
    report.add(
        "deep: prune --older-than 27d",
        f"{deleted:,} tasks (+ attempts) in {took:.1f} s = {deleted / took:,.0f}/s, "
        f"{len(batches)} batches of ≤ {PRUNE_BATCH}, each its own transaction",
    )
    report.add("deep: prune batch (= longest row-lock hold)", spread(batches))


def autovacuum(db: psycopg.Connection[Any], report: Report) -> None:
    row = db.execute(
        """SELECT c.reloptions, s.n_dead_tup, s.autovacuum_count, s.autoanalyze_count
           FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
           WHERE c.oid = %s::regclass""",
        (f"{SCHEMA}.tasks",),
    ).fetchone()
    assert row is not None
    report.add("deep: tasks reloptions (migration 0004)", ", ".join(row[0] or ["none"]))
    report.add(
        "deep: tasks autovacuum so far",
        f"{row[2]} vacuums, {row[3]} analyzes, {row[1]:,} dead rows",
    )


# -- the report ------------------------------------------------------------------------------


def write(report: Report, args: argparse.Namespace, began: str) -> Path:
    from rich.table import Table

    table = Table(title="tenure at scale", title_justify="left")
    table.add_column("figure")
    table.add_column("value")
    for figure, value in report.rows:
        table.add_row(figure, value)
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")
    out = h.ROOT / "bench" / "results" / "scale.md"
    lines = [
        "# tenure at scale: a large fleet and a deep backlog",
        "",
        f"`make bench-scale` ({' '.join(sys.argv[1:]) or 'defaults'}) at tenure {h.revision()}; "
        f"{os.cpu_count()} cores; "
        f"load average at start {began}, at end {h.load()}.",
        "",
        "| figure | value |",
        "|---|---|",
        *(f"| {f} | {v.replace('|', '/')} |" for f, v in report.rows),
        "",
        "Load average (1, 5, 15 min) before and after each measured part:",
        "",
        *(f"- {name}: {a} → {b}" for name, (a, b) in report.loads.items()),
        *([""] + [f"Note: {n}" for n in report.notes] if report.notes else []),
    ]
    for name, plan in report.plans.items():
        lines += ["", f"EXPLAIN of the claim's pick ({name}):", "", "```", plan, "```"]
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=64, help="worker processes (64)")
    p.add_argument("--concurrency", type=int, default=2, help="slots per process (2)")
    p.add_argument("--ms", type=float, default=50.0, help="task sleep in ms (50)")
    p.add_argument("--lease", type=int, default=15, help="lease in seconds (15)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before the window (5)")
    p.add_argument("--window", type=float, default=30.0, help="measured seconds (30)")
    p.add_argument("--start-timeout", type=float, default=180.0, help="fleet start-up limit")
    p.add_argument("--pickups", type=int, default=60, help="single tasks sent to the idle fleet")
    p.add_argument("--pickup-rate", type=float, default=10.0, help="their sends per second")
    p.add_argument("--queued", type=int, default=2_000_000, help="deep backlog (2,000,000)")
    p.add_argument("--finished", type=int, default=5_000_000, help="history (5,000,000)")
    p.add_argument("--probes", type=int, default=200, help="timed claims per backlog (200)")
    p.add_argument("--skip-fleet", action="store_true", help="only the deep backlog")
    p.add_argument("--skip-deep", action="store_true", help="only the large fleet")
    args = p.parse_args()
    began = h.load()
    console.print(f"load average before: {began}; sizes: {vars(args)}")
    os.environ["TENURE_BENCH_SCHEMA"] = SCHEMA
    report = Report()
    try:
        dsn, which = h.pick_dsn()
        with psycopg.connect(dsn, autocommit=True) as db:
            which = f"{which} {h.server_version(db)}"
        if not args.skip_fleet:
            with h.phase("large fleet", report.loads):
                large_fleet(dsn, which, args, report)
        if not args.skip_deep:
            with h.phase("deep backlog", report.loads):
                deep_backlog(dsn, which, args, report)
    except (h.HarnessError, psycopg.Error) as exc:
        console.print(f"[red]harness failure:[/] {str(exc).strip().splitlines()[0]}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; workers stopped, databases dropped[/]")
        return 130
    out = write(report, args, began)
    console.print(f"load average after: {h.load()}; written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
