"""Procrastinate for ``make bench``: its own database, psycopg connector, one no-op task.

Throughput settings, printed by ``info``: the worker runs the async no-op task with
``concurrency=--concurrency`` (the library's default is 1) and keeps finished jobs
(``delete_jobs="never"``, its default), so the harness counts ``succeeded`` rows.
The ``stream`` mode defers ``noop`` on the shared 50 ms clock; a spike
(``enqueue --spike``) defers ``noop_spike``, a second no-op task, so the harness can
tell them apart; ``procrastinate_events`` holds when each was deferred, started and
succeeded.
"""

from __future__ import annotations

import asyncio
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procrastinate  # noqa: E402
from common import Clock, emit, parser, run_clock_async  # noqa: E402


def make_app(dsn: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop() -> None:
        pass

    @app.task(name="noop_spike")
    async def noop_spike() -> None:
        pass

    return app


async def main() -> int:
    args = parser().parse_args()
    if args.mode == "info":
        emit(
            {
                "peer": "Procrastinate",
                "version": version("procrastinate"),
                "worker": f"run_worker_async(concurrency={args.concurrency}), async no-op task",
                "recovery": "none by default: a job of a dead worker stays 'doing' until a "
                "user-written periodic task retries stalled jobs (worker heartbeat every 10 s, "
                "stalled after 30 s)",
            }
        )
        return 0
    app = make_app(args.dsn)
    noop = app.tasks["noop_spike" if args.spike else "noop"]
    async with app.open_async():
        if args.mode == "setup":
            await app.schema_manager.apply_schema_async()
        elif args.mode == "enqueue":
            t0 = time.perf_counter()
            if args.shape == "single":
                for _ in range(args.n):
                    await noop.defer_async()
            else:
                for start in range(0, args.n, args.batch):
                    k = min(args.batch, args.n - start)
                    await noop.batch_defer_async(*([{}] * k))
            elapsed = time.perf_counter() - t0
            emit({"n": args.n, "seconds": elapsed, "rate": args.n / elapsed})
        elif args.mode == "stream":

            async def send(k: int) -> None:
                await noop.batch_defer_async(*([{}] * k))

            await run_clock_async(Clock(args.rate, args.seconds, args.tick), send)
        elif args.mode == "worker":
            await app.run_worker_async(concurrency=args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
