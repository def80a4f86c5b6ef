"""The tasks of ``make bench``.

The schema comes from ``TENURE_BENCH_SCHEMA`` (default ``bench_tenure``), so the
benchmark never touches an application's queue. Tasks that the harness times
append one line per start to the file named by ``TENURE_BENCH_LOG``
(``<kind> <task id> <attempt> <wall clock at start> <value from the payload>``),
with a single ``os.write`` on an ``O_APPEND`` descriptor, so lines from several
worker processes never interleave.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import tenure
from tenure import Registry

reg = Registry(schema=os.environ.get("TENURE_BENCH_SCHEMA", "bench_tenure"))

_log_fd: int | None = None


def record(kind: str, payload: dict[str, Any]) -> None:
    """Append one start line for the harness."""
    global _log_fd
    path = os.environ.get("TENURE_BENCH_LOG")
    if not path:
        return
    if _log_fd is None:
        _log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    ctx = tenure.current()
    line = f"{kind} {ctx.id} {ctx.attempt} {time.time():.6f} {payload.get('t', 0)}\n"
    os.write(_log_fd, line.encode())


@reg.task
async def noop(payload: dict[str, Any]) -> None:
    """Do nothing: the drain phase measures the queue, not the task."""


@reg.task
async def probe(payload: dict[str, Any]) -> None:
    """Record when it started; ``payload["t"]`` is the wall clock just before send."""
    record("probe", payload)


@reg.task(max_crashes=1000)
async def hold(payload: dict[str, Any]) -> None:
    """First attempt: hold the lease for a minute (the harness SIGKILLs its worker).
    Any later attempt records its start and returns at once."""
    if tenure.current().attempt == 1:
        await asyncio.sleep(float(payload.get("hold", 60)))
        return
    record("hold", payload)


@reg.task
async def stream(payload: dict[str, Any]) -> None:
    """A short I/O-bound task of the rolling-deploy stream: record, then sleep ``ms``."""
    record("stream", payload)
    await asyncio.sleep(float(payload.get("ms", 20)) / 1000)
