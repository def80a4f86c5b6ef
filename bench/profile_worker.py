"""Run ``tenure worker`` with counters on its hot path, to see where a drain's time goes.

    PYTHONPATH=. TENURE_BENCH_SCHEMA=bench_tenure \\
        .venv/bin/python bench/profile_worker.py worker bench.bench_tasks:reg --concurrency 64

Takes the same arguments as ``tenure worker``. tenure's code is not changed: the
worker's claim and outcome statements and its database links are wrapped at start-up.
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

from tenure._store import worker as store
from tenure._store.worker_rows import Claimed, ClaimResult, Outcome, Settled

claims: Counter[tuple[int, int]] = Counter()  # (asked for, got) -> times
completions: Counter[int] = Counter()  # batch size -> times
calls: Counter[str] = Counter()
seconds: Counter[str] = Counter()

_claim = store.AsyncStore.claim
_complete_and_claim = store.AsyncStore.complete_and_claim
_complete = store.AsyncStore.complete
_fetch = store.Link.fetch


async def claim(self: store.AsyncStore, **params: Any) -> list[Claimed]:
    rows = await _claim(self, **params)
    claims[(params["limit"], len(rows))] += 1
    return rows


async def complete_and_claim(self: store.AsyncStore, **params: Any) -> ClaimResult:
    result = await _complete_and_claim(self, **params)
    claims[(params["limit"], len(result.claimed))] += 1
    completions[len(params["outcomes"])] += 1
    return result


async def complete(
    self: store.AsyncStore, *, worker: Any, outcomes: list[Outcome]
) -> list[Settled]:
    completions[len(outcomes)] += 1
    return await _complete(self, worker=worker, outcomes=outcomes)


async def fetch(self: store.Link, statement: str, params: dict[str, Any]) -> Any:
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
    store.AsyncStore.claim = claim  # type: ignore[method-assign]
    store.AsyncStore.complete_and_claim = complete_and_claim  # type: ignore[method-assign]
    store.AsyncStore.complete = complete  # type: ignore[method-assign]
    store.Link.fetch = fetch  # type: ignore[method-assign]
    atexit.register(report)
    from tenure.cli import run

    sys.argv = ["tenure", *sys.argv[1:]]
    run()


if __name__ == "__main__":
    main()
