"""PgQueuer for ``make bench``: its own database, asyncpg driver, one no-op entrypoint.

Throughput settings, chosen like tenure's and printed by ``info``: ``batch_size``
(jobs dequeued per round trip) is ``--batch-size`` (default 100 here; the library's
default is 10) and the worker runs in continuous mode with no concurrency cap.
The ``stream`` mode sends ``noop`` jobs on the shared 50 ms clock; a spike
(``enqueue --spike``) sends ``noop_spike`` jobs, a second no-op entrypoint, so the
harness can tell them apart in ``pgqueuer_log``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg  # noqa: E402
from common import Clock, emit, parser, run_clock_async  # noqa: E402
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager  # noqa: E402

BATCH_SIZE = 100


async def main() -> int:
    p = parser()
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    args = p.parse_args()
    if args.mode == "info":
        emit(
            {
                "peer": "PgQueuer",
                "version": version("pgqueuer"),
                "worker": f"QueueManager.run(batch_size={args.batch_size}), asyncpg driver, "
                "async no-op entrypoint",
                "recovery": "a picked job whose heartbeat is older than heartbeat_timeout "
                f"(default {timedelta(seconds=30).total_seconds():.0f} s, beats every 15 s) "
                "is picked again by another worker",
            }
        )
        return 0
    conn = await asyncpg.connect(args.dsn)
    queries = Queries(AsyncpgDriver(conn))
    try:
        if args.mode == "setup":
            await queries.install()
        elif args.mode == "teardown":
            await queries.uninstall()
        elif args.mode == "enqueue":
            t0 = time.perf_counter()
            name = "noop_spike" if args.spike else "noop"
            if args.shape == "single":
                for _ in range(args.n):
                    await queries.enqueue(name, None)
            else:
                for start in range(0, args.n, args.batch):
                    k = min(args.batch, args.n - start)
                    await queries.enqueue([name] * k, [None] * k, [0] * k)
            elapsed = time.perf_counter() - t0
            emit({"n": args.n, "seconds": elapsed, "rate": args.n / elapsed})
        elif args.mode == "stream":

            async def send(k: int) -> None:
                await queries.enqueue(["noop"] * k, [None] * k, [0] * k)

            await run_clock_async(Clock(args.rate, args.seconds, args.tick), send)
        elif args.mode == "worker":
            qm = QueueManager(queries)

            @qm.entrypoint("noop")
            async def noop(job: Job) -> None:
                pass

            @qm.entrypoint("noop_spike")
            async def noop_spike(job: Job) -> None:
                pass

            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, qm.shutdown.set)
            await qm.run(batch_size=args.batch_size)
    finally:
        await conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
