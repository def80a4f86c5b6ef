"""What schedules cost a fleet: statements per worker per second, with 1,000 declared.

Four workers of ``bench/schedules_app.py`` run on a database of their own for a
minute, three times: with no schedule (the fleet's own idle load: heartbeats, the
reaper, the promoter), with 1,000 hourly schedules (each at a minute of the hour of
its own: an idle fleet that sends about one tick every four seconds), and with 1,000
schedules ticking once a minute each (about 17 ticks a second). A statement is a
transaction here (every worker statement runs in autocommit), read from
``pg_stat_database`` for that database alone. For the ticking shape it also reports
how late ticks were sent (fired_at - tick, by the database clock).

    .venv/bin/python bench/schedules_load.py [--dsn DSN] [--seconds 60] [--schedules 1000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness as h  # noqa: E402

SCHEMA = "bench_schedules"
WORKERS = 4


def transactions(db: psycopg.Connection[Any], name: str) -> int:
    row = db.execute(
        "SELECT pg_stat_clear_snapshot(), xact_commit + xact_rollback FROM pg_stat_database"
        " WHERE datname = %s",
        (name,),
    ).fetchone()
    assert row is not None
    return int(row[1])


def measure(admin: str, count: int, shape: str, seconds: float) -> dict[str, Any]:
    name = f"bench_sched_{shape}_{count}"
    with h.fresh_database(admin, name) as dsn, h.fleet(f"schedules-{shape}-{count}") as fleet:
        env = {
            **h.tenure_env(dsn, SCHEMA),
            "TENURE_BENCH_SCHEDULES": str(count),
            "TENURE_BENCH_SCHEDULE_SHAPE": shape,
        }
        cmd = h.tenure_worker_cmd(["--queues", "timed"], app="bench.schedules_app:reg")
        for _ in range(WORKERS):
            fleet.start(cmd, env=env)
        with (
            psycopg.connect(admin, autocommit=True) as stats,
            psycopg.connect(dsn, autocommit=True) as db,
        ):
            db.execute("SELECT 1")
            # once every worker is up, and a settle so start-up statements are behind us
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if (
                        h.scalar(
                            db, f"SELECT count(*) FROM {SCHEMA}.workers WHERE state = 'active'"
                        )
                        >= WORKERS
                    ):
                        break
                except psycopg.errors.UndefinedTable:
                    pass
                fleet.check_alive()
                time.sleep(0.2)
            time.sleep(5)
            start, t0 = transactions(stats, name), time.monotonic()
            ticks0 = h.scalar(db, f"SELECT count(*) FROM {SCHEMA}.schedule_ticks")
            time.sleep(seconds)
            fleet.check_alive()
            end, t1 = transactions(stats, name), time.monotonic()
            ticks = h.scalar(db, f"SELECT count(*) FROM {SCHEMA}.schedule_ticks") - ticks0
            late = [
                r[0]
                for r in db.execute(
                    f"SELECT extract(epoch FROM fired_at - tick) FROM {SCHEMA}.schedule_ticks"
                )
            ]
            doubles = h.scalar(
                db,
                f"SELECT count(*) FROM (SELECT schedule_tick FROM {SCHEMA}.tasks"
                f" WHERE schedule IS NOT NULL GROUP BY schedule, schedule_tick"
                f" HAVING count(*) > 1) d",
            )
    per = (end - start) / (t1 - t0) / WORKERS
    return {
        "schedules": count,
        "shape": shape,
        "statements_per_worker_s": per,
        "ticks_per_s": ticks / (t1 - t0),
        "late_p50_ms": 1000 * statistics.median(late) if late else float("nan"),
        "late_p99_ms": 1000 * h.percentile([float(x) for x in late], 99) if late else float("nan"),
        "late_max_ms": 1000 * max(late) if late else float("nan"),
        "ticks_sent_twice": doubles,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=h.SYSTEM_DSN)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--schedules", type=int, default=1000)
    args = parser.parse_args()
    rows = [
        measure(args.dsn, 0, "hourly", args.seconds),
        measure(args.dsn, args.schedules, "hourly", args.seconds),
        measure(args.dsn, args.schedules, "minutely", args.seconds),
    ]
    base = rows[0]["statements_per_worker_s"]
    print(f"{WORKERS} workers, {args.seconds:g} s each, PostgreSQL at {args.dsn}")
    print(f"{'schedules':>9} {'shape':>9} {'stmts/worker/s':>15} {'added':>7} {'ticks/s':>8}"
          f" {'late p50/p99/max ms':>22} {'sent twice':>10}")  # fmt: skip
    for r in rows:
        late = f"{r['late_p50_ms']:.0f}/{r['late_p99_ms']:.0f}/{r['late_max_ms']:.0f}"
        print(
            f"{r['schedules']:>9} {r['shape']:>9} {r['statements_per_worker_s']:>15.2f}"
            f" {r['statements_per_worker_s'] - base:>+7.2f} {r['ticks_per_s']:>8.2f}"
            f" {late:>22} {r['ticks_sent_twice']:>10}"
        )


if __name__ == "__main__":
    main()
