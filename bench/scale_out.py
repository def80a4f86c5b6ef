"""``make bench-scale-out``: steady-state throughput of 1, 2 and 4 worker processes.

What it measures: tasks finished per second by N worker processes (each
``--concurrency C`` slots) on one I/O-bound task that sleeps ``--ms`` milliseconds,
so the theoretical ceiling is N*C*1000/ms and a queue that scales out should get
close to N times the one-process figure. With ``--kind cpu`` the task instead burns
``--ms`` of pure-Python CPU (holding the GIL) and the N processes are one supervised
pool, ``tenure worker --processes N``: one process can run one such task at a time,
so the ceiling is min(N, cores)*1000/ms. ``make bench-cpu`` runs that form.

How: on the system PostgreSQL at 127.0.0.1:5432 if it answers within 2 s, else on
the embedded server, in its own schema (dropped and recreated for every run), a
backlog of about 1.5x ``--seconds`` of work at the ceiling rate is enqueued with
``send_many`` and the tasks table is ANALYZEd, as autovacuum would do within a
minute (``--no-analyze`` measures the fresh, never-analyzed table instead). N
``tenure worker`` processes are started; once every worker row is ``active`` the
harness waits ``--warmup`` seconds, then counts ``finished_tasks`` rows at t0 and
at t0 + ``--window`` (counts sampled by the harness, elapsed time from its monotonic
clock). The workers are then SIGTERMed. Each N runs ``--repeats`` times, N values
interleaved; the table shows the median. Exit status 0 whatever the figures; 1 only
if the harness failed (a worker died, the database was unreachable).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness as h  # noqa: E402
from bench.harness import ROOT, HarnessError, console, pick_dsn, scalar  # noqa: E402
from tenure.errors import TenureError  # noqa: E402

SCHEMA = "bench_scale"
BATCH = 5_000
START_TIMEOUT = 60.0


def one_run(dsn: str, db: psycopg.Connection[Any], n: int, args: argparse.Namespace) -> float:
    """Tasks per second finished by ``n`` processes over the window."""
    from bench.scale_tasks import cpu_task, io_task, reg

    task = cpu_task if args.kind == "cpu" else io_task

    db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    reg.client.close()  # the next send reconnects and migrates the fresh schema
    backlog = int(ceiling(n, args) * args.seconds * 1.5)
    for start in range(0, backlog, BATCH):
        task.send_many([{"ms": args.ms}] * min(BATCH, backlog - start))
    reg.client.close()
    if args.analyze:
        db.execute(f"ANALYZE {SCHEMA}.tasks")

    env = {
        **os.environ,
        "TENURE_DATABASE_URL": dsn,
        "TENURE_BENCH_SCHEMA": SCHEMA,
        "PYTHONPATH": str(ROOT),
    }
    cmd = [
        sys.executable,
        "-m",
        "tenure",
        "worker",
        "bench.scale_tasks:reg",
        "--concurrency",
        str(args.concurrency),
        "--lease",
        "10s",
        "--log-level",
        "warning",
    ]
    if args.kind == "cpu":
        cmd += ["--processes", str(n)]  # one supervisor, n children
    with tempfile.TemporaryFile() as log:  # the workers' stderr, summarised after the run
        fleet = h.Fleet(log)  # each in a session of its own: Ctrl-C reaches only the harness
        try:
            for _ in range(1 if args.kind == "cpu" else n):
                fleet.start(cmd, env)
            done, elapsed, left, failed = measure(db, fleet, n, args)
        finally:
            fleet.stop()
            log.seek(0)
            lines = log.read().decode(errors="replace").splitlines()
            if lines:
                console.print(f"[yellow]  N={n}: the workers logged {len(lines)} lines; first:[/]")
                console.print(f"  {lines[0]}", markup=False)
    if done == 0:
        raise HarnessError(f"N={n}: no task finished in the window")
    if left == 0:
        console.print(f"[yellow]  N={n}: the backlog ran dry in the window; raise --seconds[/]")
    if failed:
        console.print(f"[yellow]  N={n}: {failed} tasks did not succeed[/]")
    rate = done / elapsed
    console.print(f"  N={n}: {done} tasks in {elapsed:.2f} s = {rate:.0f}/s ({left} left queued)")
    return rate


def measure(
    db: psycopg.Connection[Any], fleet: h.Fleet, n: int, args: argparse.Namespace
) -> tuple[int, float, int, int]:
    """Wait for every worker, warm up, then count finished tasks over the window.

    Returns (tasks finished in the window, its length in s, tasks still queued,
    tasks finished without success).
    """
    active_sql = f"SELECT count(*) FROM {SCHEMA}.workers WHERE state = 'active'"
    deadline = time.monotonic() + START_TIMEOUT
    while scalar(db, active_sql) < n:
        fleet.check_alive()
        if time.monotonic() > deadline:
            raise HarnessError(f"{n} workers not active after {START_TIMEOUT:.0f} s")
        time.sleep(0.05)
    time.sleep(args.warmup)
    finished_sql = f"SELECT count(*) FROM {SCHEMA}.finished_tasks"
    c0, t0 = scalar(db, finished_sql), time.monotonic()
    time.sleep(args.window)
    c1, t1 = scalar(db, finished_sql), time.monotonic()
    fleet.check_alive()
    left = scalar(db, f"SELECT count(*) FROM {SCHEMA}.tasks WHERE state = 'queued'")
    failed = scalar(db, f"{finished_sql} WHERE state <> 'succeeded'")
    return c1 - c0, t1 - t0, left, failed


def ceiling(n: int, args: argparse.Namespace) -> float:
    """The most tasks per second N processes could finish."""
    if args.kind == "cpu":
        return min(n, os.cpu_count() or 1) * 1000 / args.ms
    return n * args.concurrency * 1000 / args.ms


def report(results: dict[int, list[float]], args: argparse.Namespace) -> None:
    medians = {n: statistics.median(rates) for n, rates in results.items()}
    base = medians.get(1)
    what = (
        f"cpu_task burning {args.ms:g} ms"
        if args.kind == "cpu"
        else (f"io_task sleeping {args.ms:g} ms")
    )
    table = Table(
        title=f"tenure scale-out: {what}, "
        f"{args.window:g} s window after {args.warmup:g} s warm-up, median of {args.repeats}"
    )
    for name in ("processes", "concurrency / process", "tasks/s (median)", "min–max"):
        table.add_column(name, justify="right")
    table.add_column("ratio to 1 process", justify="right")
    table.add_column("ceiling", justify="right")
    for n, rates in results.items():
        ratio = f"{medians[n] / base:.2f}×" if base else "-"
        top = ceiling(n, args)
        table.add_row(
            str(n),
            str(args.concurrency),
            f"{medians[n]:.0f}",
            f"{min(rates):.0f}–{max(rates):.0f}",
            ratio,
            f"{top:.0f} ({medians[n] / top:.0%})",
        )
    console.print(table)
    console.print("throughput = finished_tasks rows counted by the harness at t0 and t0 + window")
    if base and 2 in medians:
        console.print(f"2 processes reach {medians[2] / base:.2f}× one process (target ≥ 1.80×)")


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so the finally blocks stop the workers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16, help="slots per process (16)")
    parser.add_argument("--ms", type=float, default=20.0, help="task sleep in ms (20)")
    parser.add_argument("--seconds", type=float, default=8.0, help="backlog at ceiling (8)")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds after start (1.5)")
    parser.add_argument("--window", type=float, default=6.0, help="measured seconds (6)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per N (3)")
    parser.add_argument("--processes", default="1,2,4", help="N values (1,2,4)")
    parser.add_argument(
        "--kind",
        choices=["io", "cpu"],
        default="io",
        help="io: N separate workers on sleeping tasks; cpu: one --processes N pool on "
        "CPU-bound tasks",
    )
    parser.add_argument(
        "--analyze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ANALYZE the tasks table after enqueueing, as autovacuum would within a minute "
        "(default); --no-analyze measures the fresh, never-analyzed table",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.processes.split(",")]
    signal.signal(signal.SIGTERM, on_sigterm)

    console.print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        dsn, which = pick_dsn()
        console.print(f"[bold]database:[/] {which} ({dsn.split('?')[0]}), schema {SCHEMA}")
        console.print(f"tenure at {h.revision()}; ANALYZE after enqueue: {args.analyze}")
        os.environ["TENURE_DATABASE_URL"] = dsn
        os.environ["TENURE_BENCH_SCHEMA"] = SCHEMA
        sys.path.insert(0, str(ROOT))
        results: dict[int, list[float]] = {}
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as db:
            for repeat in range(args.repeats):
                for n in counts:  # interleaved, so drift hits every N alike
                    console.print(f"run {repeat + 1}/{args.repeats}, {n} process(es)")
                    results.setdefault(n, []).append(one_run(dsn, db, n, args))
            db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        report(results, args)
    except (HarnessError, TenureError, psycopg.Error) as exc:
        console.print(f"[red]harness failure:[/] {str(exc).strip().splitlines()[0]}")
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; workers stopped[/]")
        return 130
    finally:
        console.print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
