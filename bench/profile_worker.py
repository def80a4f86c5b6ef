"""Run ``tenure worker`` with counters on its hot path, to see where a drain's time goes.

    PYTHONPATH=. TENURE_BENCH_SCHEMA=bench_tenure \\
        .venv/bin/python bench/profile_worker.py worker bench.bench_tasks:reg --concurrency 64

Takes the same arguments as ``tenure worker``. tenure's code is not changed: the
claimer, the completer and the worker's database links are wrapped at start-up.
On exit (SIGTERM drains as usual) it prints, to stderr, how many claims and
completions were made and how large they were, and for each named statement its
count and mean time as the worker saw it (including any wait for the connection,
which claims and outcomes share). Pair it with ``py-spy record --pid`` for where
the Python side spends its time and with ``pg_stat_activity`` for the server side.
"""

from __future__ import annotations

import atexit
import sys
import time
from collections import Counter
from typing import Any

from tenure._worker import claimer, completer, link
from tenure._worker.completer import Outcome

claims: Counter[tuple[int, int]] = Counter()  # (asked for, got) -> times
completions: Counter[int] = Counter()  # batch size -> times
calls: Counter[str] = Counter()
seconds: Counter[str] = Counter()

_claim = claimer.Claimer.run_once
_write = completer.Completer._write
_fetch = link.Link.fetch


async def claim_once(
    self: claimer.Claimer, want: int, outcomes: list[Outcome] | None = None
) -> Any:
    rows, verdicts = await _claim(self, want, outcomes)
    claims[(want, len(rows))] += 1
    if outcomes:
        completions[len(outcomes)] += 1
    return rows, verdicts


async def write(self: completer.Completer, batch: list[Outcome]) -> dict[int, str]:
    completions[len(batch)] += 1
    return await _write(self, batch)


async def fetch(self: link.Link, statement: str, params: dict[str, Any]) -> Any:
    t0 = time.perf_counter()
    try:
        return await _fetch(self, statement, params)
    finally:
        calls[statement] += 1
        seconds[statement] += time.perf_counter() - t0


def report() -> None:
    out = sys.stderr
    n = sum(claims.values())
    got = sum(g * c for (_, g), c in claims.items())
    out.write(f"claims: {n}, {got / max(n, 1):.1f} tasks each; (asked, got): ")
    out.write(f"{claims.most_common(6)}\n")
    n = sum(completions.values())
    done = sum(s * c for s, c in completions.items())
    out.write(f"completions: {n}, {done / max(n, 1):.1f} outcomes each; ")
    out.write(f"sizes: {completions.most_common(6)}\n")
    for name, count in calls.most_common():
        out.write(f"  {name}: {count} calls, mean {seconds[name] / count * 1e3:.2f} ms\n")


def main() -> None:
    claimer.Claimer.run_once = claim_once  # type: ignore[method-assign]
    completer.Completer._write = write  # type: ignore[method-assign]
    link.Link.fetch = fetch  # type: ignore[method-assign]
    atexit.register(report)
    from tenure.cli import run

    sys.argv = ["tenure", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
