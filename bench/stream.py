"""``make bench-stream``: a steady stream, a spike on top of it, then the stream again.

Two ``tenure worker`` processes (``--concurrency 50``) serve an async no-op task; a
sender calls ``send_many`` with 250 tasks every 50 ms (5,000/s) for about 20 s, a
second sender then enqueues 100,000 at once while the stream goes on, and the stream
runs about 30 s more. Each run uses a fresh schema. A run FAILS if any 2-second window
had no finish while work sent before it was still unfinished, if the spike did not
drain, or if pickup p99 of the stream's tasks sent after the spike drained exceeds
100 ms. Pickup is the claim (``attempts.started_at`` of attempt 1) minus the send
(``created_at``), both from the database's clock. Every wait is bounded: a queue that
stops claiming is reported as a stall, not waited on.

    .venv/bin/python bench/stream.py [--runs 3] [--dsn postgresql://postgres@127.0.0.1:5432/test]

The default database is the embedded PostgreSQL server (as the test suite uses).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness as h  # noqa: E402
from bench import streams  # noqa: E402
from bench.harness import console  # noqa: E402
from bench.peers.common import TICK  # noqa: E402


def verdict(r: dict[str, Any], limit: float) -> tuple[bool, str]:
    """PASS or FAIL for one run, and the line that says why."""
    sp = r["spike"]
    after = sp["after_drain"]
    reasons = []
    if r["stall_windows"]:
        worst = max(x[1] for x in r["stall_windows"])
        reasons.append(
            f"{len(r['stall_windows'])} stretch(es) of ≥ {r['stall_window']:g} s with no finish "
            f"while work was queued (longest {worst:.1f} s, first at "
            f"{r['stall_windows'][0][0]:.1f} s)"
        )
    if not sp["drained"]:
        reasons.append(
            f"spike not drained: the queue never came back to the stream's own "
            f"{sp['steady_queue']:,} waiting ({sp['spike_finished']:,} of {sp['n']:,} spike "
            f"tasks finished, {r['left']:,} tasks left)"
        )
    elif not after["n"]:
        reasons.append("no stream task was sent after the spike drained")
    elif after["p99"] > limit:
        reasons.append(f"post-spike pickup p99 {after['p99'] * 1e3:.1f} ms > {limit * 1e3:.0f} ms")
    s = r["sender"]
    behind = " [SENDER BEHIND]" if s["rate"] < 0.95 * s["target"] else ""
    detail = (
        f"sender {s['rate']:,.0f}/s of {s['target']:,.0f}/s{behind} "
        f"({s['missed_ticks']} ticks missed); "
        f"spike of {sp['n']:,} sent in {sp['send_seconds']:.1f} s"
    )
    if sp["drained"]:
        detail += (
            f", drained {sp['drain_seconds']:.1f} s after it was sent "
            f"({sp.get('drain_rate', float('nan')):,.0f}/s)"
        )
    if after["n"]:
        detail += (
            f"; after it: pickup p50 {after['p50'] * 1e3:.1f} ms, p99 {after['p99'] * 1e3:.1f} ms "
            f"over {after['n']:,} tasks (before it: p99 {sp['pre_p99'] * 1e3:.1f} ms)"
        )
    detail += f"; stalled seconds {len(r['stalled_seconds'])}"
    ok = not reasons
    return ok, ("PASS" if ok else "FAIL: " + "; ".join(reasons)) + " — " + detail


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1, help="repeats, each on a fresh schema (1)")
    p.add_argument("--dsn", default="", help="database (default: the embedded server)")
    p.add_argument("--rate", type=float, default=5_000, help="stream tasks/s (5,000)")
    p.add_argument("--before", type=float, default=20.0, help="stream before the spike (20 s)")
    p.add_argument("--after", type=float, default=30.0, help="stream after the spike (30 s)")
    p.add_argument("--spike", type=int, default=100_000, help="tasks sent at once (100,000)")
    p.add_argument("--concurrency", type=int, default=50, help="slots per worker (50)")
    p.add_argument("--procs", type=int, default=2, help="worker processes (2)")
    p.add_argument("--settle", type=float, default=60.0, help="longest wait to empty (60 s)")
    p.add_argument("--limit-ms", type=float, default=100.0, help="post-spike p99 limit (100)")
    p.add_argument("--json", type=Path, help="also write every run's figures here")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    if args.dsn:
        dsn, which = args.dsn, args.dsn
    else:
        from tenure.embedded import ensure_embedded

        dsn, which = ensure_embedded(), "embedded PostgreSQL"
    plan = streams.Plan(
        rate=args.rate,
        seconds=args.before + args.after,
        spike=args.spike,
        spike_at=args.before,
        settle=args.settle,
    )
    try:
        with psycopg.connect(dsn, connect_timeout=5) as db:
            version = h.server_version(db)
    except psycopg.Error as exc:
        console.print(f"[red]cannot connect:[/] {str(exc).strip().splitlines()[0]}")
        return 2
    console.print(
        f"database: {which} (PostgreSQL {version}); tenure at {h.revision()}; "
        f"{args.procs} workers --concurrency {args.concurrency}; {args.rate:,.0f}/s in "
        f"batches every {TICK * 1e3:.0f} ms; spike of {args.spike:,} at "
        f"{args.before:g} s, stream to {plan.seconds:g} s; load {h.load()}"
    )
    passed, results = 0, []
    try:
        for i in range(args.runs):
            t0 = time.monotonic()
            sys_ = streams.Tenure(dsn, args.concurrency)
            try:
                r = streams.run(sys_, plan, procs=args.procs)
                ok, line = verdict(r, args.limit_ms / 1e3)
            except (h.HarnessError, psycopg.Error) as exc:
                r, ok = {"error": str(exc)}, False
                line = f"FAIL: harness: {str(exc).strip().splitlines()[0]}"
            results.append(r)
            passed += ok
            console.print(
                f"run {i + 1}/{args.runs}: {line} [{time.monotonic() - t0:.0f} s, load {h.load()}]",
                markup=False,
            )
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; workers stopped[/]")
        return 130
    finally:
        if args.json:
            args.json.write_text(json.dumps(results, default=float))
    console.print(f"{passed} of {args.runs} runs passed")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
