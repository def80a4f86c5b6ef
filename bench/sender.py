"""Tenure's sender for the streams of ``make bench`` and ``make bench-stream``.

    python bench/sender.py stream DSN --rate R --seconds S [--tick 0.05]
    python bench/sender.py enqueue DSN N batch [--spike]

``stream`` calls ``send_many`` on the shared 50 ms clock of ``bench/peers/common.py``
(the peers' adapters use the same one) and prints a JSON line when it starts and one
with the achieved send rate when it ends. ``enqueue --spike`` sends N tasks at once,
in ``send_many`` calls of 5,000, each with the payload ``{"spike": 1}`` so the harness
can tell them from the stream's ``{}``. The schema comes from
``TENURE_BENCH_SCHEMA``, as for the workers; the command line has the shape of the
peers' adapters.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers.common import Clock, emit, parser, run_clock  # noqa: E402

SPIKE_BATCH = 5_000


def main() -> int:
    args = parser().parse_args()
    os.environ["TENURE_DATABASE_URL"] = args.dsn
    from bench import bench_tasks

    noop = bench_tasks.noop
    if args.mode == "stream":

        def send(k: int) -> None:
            noop.send_many([{}] * k)

        run_clock(Clock(args.rate, args.seconds, args.tick), send)
    elif args.mode == "enqueue":
        n = args.n
        payload = {"spike": 1} if args.spike else {}
        t0 = time.perf_counter()
        for start in range(0, n, SPIKE_BATCH):
            noop.send_many([payload] * min(SPIKE_BATCH, n - start))
        elapsed = time.perf_counter() - t0
        emit({"n": n, "seconds": elapsed, "rate": n / elapsed})
    else:
        raise SystemExit(f"sender.py: no mode {args.mode}")
    bench_tasks.reg.client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
