"""``make bench-bloat``: does tenure's drain rate stay flat over a long burn-down?

A Postgres queue slows as it works when dead index entries, table growth or
autovacuum get in the claim's way. This enqueues ``--tasks`` no-op tasks (default
1,000,000) with ``send_many``, starts ``--processes`` worker processes and counts
``finished_tasks`` every ``--sample`` seconds (2) until the backlog is gone (or ``--max-seconds``).
It reports the drain rate of each tenth of the backlog and passes when the last
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


def crossing(samples: list[tuple[float, int]], mark: float) -> float:
    """When the finished count reached ``mark``, interpolated between samples."""
    for (t0, d0), (t1, d1) in zip(samples, samples[1:], strict=False):
        if d1 >= mark:
            return t1 if d1 == d0 else t0 + (t1 - t0) * (mark - d0) / (d1 - d0)
    return samples[-1][0]


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
            samples: list[tuple[float, int]] = []
            with h.fleet("bloat") as fleet:
                for _ in range(args.processes):
                    fleet.start(h.tenure_worker_cmd(flags), env)
                begin = time.monotonic()
                while not samples or samples[-1][1] < args.tasks:
                    done = h.scalar(db, f"SELECT count(*) FROM {SCHEMA}.finished_tasks")
                    samples.append((time.monotonic(), done))
                    if samples[-1][0] - begin > args.max_seconds:
                        raise h.HarnessError(f"backlog not drained in {args.max_seconds:.0f} s")
                    fleet.check_alive()
                    # Finely until the first task finishes, so the clock starts near it
                    time.sleep(args.sample if done else 0.05)
            db.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    except (h.HarnessError, psycopg.Error) as exc:
        console.print(f"[red]harness failure:[/] {str(exc).strip().splitlines()[0]}")
        return 1
    step = args.tasks / 10
    # The clock starts at the first sample that saw finished tasks (start-up is not
    # drain time), and the first tenth counts only what finished after it; each tenth's
    # end is interpolated between the two samples around it.
    start, done0 = next((t, d) for t, d in samples if d > 0)
    marks = [float(done0)] + [k * step for k in range(1, 11)]
    reached = [start] + [crossing(samples, m) for m in marks[1:]]
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
