"""``make bench-bloat``: does tenure's drain rate stay flat over a long burn-down?

A Postgres queue slows as it works when dead index entries, table growth or
autovacuum get in the claim's way. This enqueues ``--tasks`` no-op tasks (default
1,000,000) with ``send_many``, starts ``--processes`` worker processes and counts
``finished_tasks`` every ``--sample`` seconds (2) until the backlog is gone (or ``--max-seconds``).
It reports the drain rate of each tenth of the backlog, timed by the tasks' own
finishing times, and passes when the last
tenth is within 30 % of the first (issue 6, target 6). Same database choice as
``make bench``; the schema ``bench_bloat`` is dropped afterwards. The machine may
be shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness as h  # noqa: E402
from bench.harness import console  # noqa: E402

SCHEMA = "bench_bloat"
BATCH = 5_000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=1_000_000, help="backlog (1,000,000)")
    p.add_argument("--processes", type=int, default=2, help="worker processes (2)")
    p.add_argument("--concurrency", type=int, default=64, help="slots per process (64)")
    p.add_argument(
        "--sample",
        type=float,
        default=2.0,
        help="seconds between counts (2; a count(*) of a million finished rows is not free)",
    )
    p.add_argument("--max-seconds", type=float, default=600, help="give up after (600 s)")
    args = p.parse_args()
    console.print(f"load average before: {h.load()}; sizes: {vars(args)}")
    dsn, which = h.pick_dsn()
    os.environ["TENURE_DATABASE_URL"] = dsn
    os.environ["TENURE_BENCH_SCHEMA"] = SCHEMA
    from bench import bench_tasks

    flags = ["--concurrency", str(args.concurrency), "--lease", "30s"]
    console.print(f"database: {which}; workers: {' '.join(flags)} × {args.processes}")
    try:
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            t0 = time.perf_counter()
            for start in range(0, args.tasks, BATCH):
                bench_tasks.noop.send_many([{}] * min(BATCH, args.tasks - start))
            console.print(f"enqueued {args.tasks:,} in {time.perf_counter() - t0:.1f} s")
            bench_tasks.reg.client.close()
            db.execute(f"ANALYZE {SCHEMA}.tasks")
            env = h.tenure_env(dsn, SCHEMA)
            with h.fleet("bloat") as fleet:
                for _ in range(args.processes):
                    fleet.start(h.tenure_worker_cmd(flags), env)
                begin = time.monotonic()
                while h.scalar(db, f"SELECT count(*) FROM {SCHEMA}.finished_tasks") < args.tasks:
                    if time.monotonic() - begin > args.max_seconds:
                        raise h.HarnessError(f"backlog not drained in {args.max_seconds:.0f} s")
                    fleet.check_alive()
                    time.sleep(args.sample)
            # Each tenth is timed by the tasks' own finishing times (the database's
            # clock): a sample taken after the last task finished would count idle
            # time against the last tenth, and one taken before the first finish would
            # count start-up against the first.
            step = args.tasks // 10
            reached = [
                float(r[0])
                for r in db.execute(
                    f"""SELECT extract(epoch FROM s.finished_at) FROM (
                            SELECT finished_at, row_number() OVER (ORDER BY finished_at) AS n
                            FROM {SCHEMA}.finished_tasks) s
                        WHERE s.n = 1 OR s.n % {step} = 0 ORDER BY s.n"""
                ).fetchall()
            ]
            db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    except (h.HarnessError, psycopg.Error) as exc:
        console.print(f"[red]harness failure:[/] {str(exc).strip().splitlines()[0]}")
        return 1
    marks = [1] + [k * step for k in range(1, 11)]
    tenths = [
        (m1 - m0) / max(b - a, 1e-9)
        for m0, m1, a, b in zip(marks[:-1], marks[1:], reached[:-1], reached[1:], strict=True)
    ]
    for i, rate in enumerate(tenths):
        console.print(f"  tenth {i + 1:2}: {rate:8.0f} tasks/s")
    ratio = tenths[-1] / tenths[0]
    verdict = "PASS" if ratio >= 0.7 else "FAIL"
    console.print(
        f"last tenth {tenths[-1]:.0f}/s vs first {tenths[0]:.0f}/s = {ratio:.0%} "
        f"(target ≥ 70 %): {verdict}"
    )
    out = h.ROOT / "bench" / "results" / "bloat.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# tenure burn-down under bloat\n\n"
        f"{args.tasks:,} no-op tasks, {args.processes} × `{' '.join(flags)}`, {which}; "
        f"load average at end {h.load()}.\n\n| tenth | tasks/s |\n|---:|---:|\n"
        + "".join(f"| {i + 1} | {r:.0f} |\n" for i, r in enumerate(tenths))
        + f"\nLast tenth / first tenth: {ratio:.0%} (target ≥ 70 %): **{verdict}**\n"
    )
    console.print(f"load average after: {h.load()}; written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
