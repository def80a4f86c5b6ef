"""Tasks for the tests of a worker's task lines and of its process sizing.

The schema comes from ``TENURE_TEST_SCHEMA`` so every test gets its own.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import tenure
from tenure import Backoff, Registry

reg = Registry(schema=os.environ.get("TENURE_TEST_SCHEMA", "tenure_test"))

QUICK = Backoff(base=timedelta(milliseconds=100), jitter=0.0)


@reg.task(queue="logs", max_attempts=4, backoff=QUICK)
def flaky(payload: dict) -> int:
    """Fails its first two attempts with a two-line message, then succeeds."""
    attempt = tenure.current().attempt
    if attempt <= 2:
        raise ValueError(f"flaky attempt {attempt} fails\nsecond line of the message")
    return attempt


@reg.task(queue="logs", max_attempts=2, backoff=QUICK)
def hopeless(payload: dict) -> None:
    """Always fails, with text that would rewrite a terminal line if logged as it is."""
    raise RuntimeError(f"hopeless {payload.get('tag', '')} \x1b[2K\x07 rewritten")


@reg.task(queue="logs")
def fine(payload: dict) -> None:
    return None


@reg.task(queue="logs", max_attempts=1)
def poison(payload: dict) -> None:
    raise RuntimeError(f"poison {payload['i']}")


@reg.task(queue="cpu", isolation="process")
def crunch(payload: dict) -> int:
    """Stands in for a parser: holds a task process for ``s`` seconds."""
    time.sleep(float(payload.get("s", 0.5)))
    return os.getpid()
