"""Celery with a Redis broker for ``make bench``: its own Redis database, one no-op task.

The DSN argument is the broker URL (``redis://127.0.0.1:6379/15``). One "worker
process" is one ``celery worker --pool solo`` (one OS process doing the work, as a
tenure worker process is); no result backend, as a no-op drain needs none. Celery has
no bulk enqueue: the "batch" shape publishes every message through one producer.

Celery has no database to ask when a task was sent or started, so the streams use a
second task, ``stamp(kind, sent)``: the sender passes its wall clock at publish, and
the task appends ``<kind> <sent> <wall clock at start>`` to the file named by
``BENCH_STAMP_LOG`` with one ``os.write`` (O_APPEND). ``stream`` publishes
``stamp("s", ...)`` on the shared 50 ms clock; ``enqueue --spike`` publishes
``stamp("x", ...)``.
"""

from __future__ import annotations

import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from celery import Celery  # noqa: E402
from common import Clock, emit, parser, run_clock  # noqa: E402

_stamp_fd: int | None = None


def make_app(url: str) -> Celery:
    app = Celery("bench", broker=url)
    app.conf.task_ignore_result = True

    @app.task(name="noop")
    def noop() -> None:
        pass

    @app.task(name="stamp")
    def stamp(kind: str, sent: float) -> None:
        global _stamp_fd
        if _stamp_fd is None:
            path = os.environ["BENCH_STAMP_LOG"]
            _stamp_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_stamp_fd, f"{kind} {sent:.6f} {time.time():.6f}\n".encode())

    return app


def main() -> int:
    args = parser().parse_args()
    app = make_app(args.dsn or "redis://127.0.0.1:6379/15")
    noop = app.tasks["noop"]
    stamp = app.tasks["stamp"]
    if args.mode == "info":
        conf = app.conf
        visibility = (conf.broker_transport_options or {}).get("visibility_timeout", 3600)
        emit(
            {
                "peer": "Celery+Redis",
                "version": f"celery {version('celery')}, redis-py {version('redis')}",
                "worker": "celery worker --pool solo (one process), "
                f"prefetch multiplier {conf.worker_prefetch_multiplier}",
                "recovery": f"task_acks_late={conf.task_acks_late}: a message is acked when "
                "received, so the task a killed worker was running is lost; prefetched unacked "
                f"messages come back after the visibility timeout ({visibility} s)",
            }
        )
    elif args.mode in ("setup", "teardown"):
        with app.connection_for_write() as conn:
            conn.default_channel.client.flushdb()
    elif args.mode == "enqueue":
        t0 = time.perf_counter()
        if args.spike:
            with app.producer_or_acquire() as producer:
                for _ in range(args.n):
                    stamp.apply_async(("x", time.time()), producer=producer)
        elif args.shape == "single":
            for _ in range(args.n):
                noop.delay()
        else:
            with app.producer_or_acquire() as producer:
                for _ in range(args.n):
                    noop.apply_async(producer=producer)
        elapsed = time.perf_counter() - t0
        emit({"n": args.n, "seconds": elapsed, "rate": args.n / elapsed})
    elif args.mode == "stream":
        with app.producer_or_acquire() as producer:

            def send(k: int) -> None:
                for _ in range(k):
                    stamp.apply_async(("s", time.time()), producer=producer)

            run_clock(Clock(args.rate, args.seconds, args.tick), send)
    elif args.mode == "worker":
        app.worker_main(["worker", "--pool", "solo", "--loglevel", "WARNING"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
