"""Celery with a Redis broker for ``make bench``: its own Redis database, one no-op task.

The DSN argument is the broker URL (``redis://127.0.0.1:6379/15``). One "worker
process" is one ``celery worker --pool solo`` (one OS process doing the work, as a
tenure worker process is); no result backend, as a no-op drain needs none. Celery has
no bulk enqueue: the "batch" shape publishes every message through one producer.
"""

from __future__ import annotations

import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from celery import Celery  # noqa: E402
from common import emit, parser  # noqa: E402


def make_app(url: str) -> Celery:
    app = Celery("bench", broker=url)
    app.conf.task_ignore_result = True

    @app.task(name="noop")
    def noop() -> None:
        pass

    return app


def main() -> int:
    args = parser().parse_args()
    app = make_app(args.dsn or "redis://127.0.0.1:6379/15")
    noop = app.tasks["noop"]
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
        if args.shape == "single":
            for _ in range(args.n):
                noop.delay()
        else:
            with app.producer_or_acquire() as producer:
                for _ in range(args.n):
                    noop.apply_async(producer=producer)
        elapsed = time.perf_counter() - t0
        emit({"n": args.n, "seconds": elapsed, "rate": args.n / elapsed})
    elif args.mode == "worker":
        app.worker_main(["worker", "--pool", "solo", "--loglevel", "WARNING"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
