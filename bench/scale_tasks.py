"""The task of ``make bench-scale-out``: one I/O-bound task that sleeps ``ms`` milliseconds.

The schema comes from ``TENURE_BENCH_SCHEMA`` (default ``bench_scale``), so the
benchmark never touches an application's queue.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tenure import Registry

reg = Registry(schema=os.environ.get("TENURE_BENCH_SCHEMA", "bench_scale"))


@reg.task
def io_task(payload: dict[str, Any]) -> None:
    """Stand in for an I/O call: sleep ``payload["ms"]`` milliseconds (default 20)."""
    time.sleep(float(payload.get("ms", 20)) / 1000)


@reg.task
def cpu_task(payload: dict[str, Any]) -> int:
    """Stand in for parsing: about ``payload["ms"]`` milliseconds of pure-Python CPU work,
    which holds the GIL, so one process cannot run two at once."""
    deadline = time.thread_time() + float(payload.get("ms", 50)) / 1000
    words = 0
    while time.thread_time() < deadline:
        text = " ".join(str(i * 7919 % 1000) for i in range(200))
        words += len(text.split())
    return words
