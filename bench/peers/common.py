"""What every peer adapter shares: its argument parser and how it reports a figure."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["info", "setup", "enqueue", "worker", "teardown"])
    p.add_argument("dsn", nargs="?", default="")
    p.add_argument("n", type=int, nargs="?", default=0)
    p.add_argument("shape", nargs="?", default="batch", choices=["single", "batch"])
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=64)
    return p


def emit(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


def timed(n: int, fn: Callable[[], None]) -> dict[str, Any]:
    t0 = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - t0
    return {"n": n, "seconds": elapsed, "rate": n / elapsed}
