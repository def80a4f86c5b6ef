"""``make demo``: a fleet loses a worker mid-run and loses no task.

On the embedded PostgreSQL (nothing to install, no DSN): enqueue a few hundred
tasks, start two worker processes, SIGKILL one while it holds leases, and report
that every task finished, how many ran more than once, and how long the takeover
took (from the kill to the first re-run of a task the dead worker held).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "tenure_demo"
LEASE = 3.0

console = Console()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400, help="tasks to enqueue (default 400)")
    args = parser.parse_args()
    if args.tasks < 20:
        parser.error("--tasks must be at least 20")

    from tenure._db.connect import resolve_dsn

    dsn = resolve_dsn(None)  # TENURE_DATABASE_URL, else the embedded server
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    os.environ["TENURE_DEMO_SCHEMA"] = SCHEMA
    sys.path.insert(0, str(ROOT))
    from examples.demo_tasks import parse_document

    console.print(f"[bold]tenure demo[/] on {dsn.split('?')[0]} (schema {SCHEMA})")
    started = time.monotonic()
    parse_document.send_many([{"pages": i % 40 + 1} for i in range(args.tasks)])
    console.print(f"enqueued {args.tasks} tasks in one round trip")

    env = {**os.environ, "TENURE_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "tenure",
        "worker",
        "examples.demo_tasks:reg",
        "--concurrency",
        "8",
        "--lease",
        f"{LEASE:g}s",
        "--log-level",
        "warning",
    ]
    fleet = [subprocess.Popen(cmd, env=env, cwd=ROOT) for _ in range(2)]
    try:
        return run(dsn, fleet, args.tasks, started)
    finally:
        for proc in fleet:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in fleet:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def run(dsn: str, fleet: list[subprocess.Popen[bytes]], total: int, started: float) -> int:
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(f"SET search_path = {SCHEMA}")

        def finished() -> int:
            return int(db.execute("SELECT count(*) FROM finished_tasks").fetchone()[0])

        def held_by(pid: int) -> int:
            return int(
                db.execute(
                    "SELECT count(*) FROM tasks t JOIN workers w ON w.id = t.lease_owner "
                    "WHERE t.state = 'running' AND w.pid = %s",
                    (pid,),
                ).fetchone()[0]
            )

        victim = fleet[0]
        deadline = time.monotonic() + 60
        while (finished() < total // 4 or held_by(victim.pid) == 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        victim.kill()
        victim.wait()
        killed_at = db.execute("SELECT clock_timestamp()").fetchone()[0]
        in_flight = held_by(victim.pid)  # its rows keep its name until their leases expire
        console.print(
            f"[red]SIGKILL[/] worker pid {victim.pid} while it held {in_flight} leases "
            f"({finished()}/{total} done)"
        )

        while finished() < total and time.monotonic() < deadline + 60:
            time.sleep(0.1)
        elapsed = time.monotonic() - started

        stats = db.execute("""
            SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*)
            FROM finished_tasks""").fetchone()
        reruns = db.execute("""
            SELECT count(*) FROM (SELECT task_id FROM attempts
                                  WHERE outcome IN ('succeeded', 'error', 'lease_expired')
                                  GROUP BY task_id HAVING count(*) > 1) r""").fetchone()[0]
        takeover = db.execute(
            """
            SELECT extract(epoch FROM max(b.started_at) - %s), count(*)
            FROM attempts a JOIN attempts b ON b.task_id = a.task_id AND b.attempt = a.attempt + 1
            WHERE a.outcome = 'lease_expired'""",
            (killed_at,),
        ).fetchone()
    succeeded, done = int(stats[0]), int(stats[1])
    lost = total - done
    table = Table(title="tenure demo: a worker was SIGKILLed mid-run")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("tasks enqueued", str(total))
    table.add_row("tasks succeeded", str(succeeded))
    table.add_row("tasks lost", str(lost))
    table.add_row(
        "tasks run more than once", f"{reruns} (in flight on the killed worker: {in_flight})"
    )
    seconds = "-" if takeover[0] is None else f"{float(takeover[0]):.2f}s"
    table.add_row(
        "takeover after the kill", f"{seconds} for {takeover[1]} tasks (lease {LEASE:g}s)"
    )
    table.add_row("wall time", f"{elapsed:.1f}s ({done / elapsed:.0f} tasks/s)")
    console.print(table)
    ok = lost == 0 and succeeded == total and reruns <= in_flight
    console.print("[green]every task finished[/]" if ok else "[red]check failed[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
