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
