"""A task under a fleet-wide rate and a rate per key, for test_rate_fleet.py: it calls
nothing and returns at once, so only the limits decide when tasks start."""

from __future__ import annotations

import os

import tenure
from tenure import Rate, Registry, RetryAfter

reg = Registry(schema=os.environ.get("TENURE_TEST_SCHEMA", "tenure_test"))

TASK_RATE = Rate.parse("50/s", burst=10)
KEY_RATE = Rate.parse("5/s", burst=2)


@reg.task(name="call_api", rate=TASK_RATE, rate_per_key=KEY_RATE)
async def call_api(payload: dict) -> None:
    return None


@reg.task(name="told_to_slow_down", rate_per_key=Rate.parse("100/s", burst=10))
def told_to_slow_down(payload: dict) -> str:
    """Answered "429" the first time: asks for a retry in 0.1 s and a quarter of the
    key's rate for a minute; the retry succeeds."""
    if tenure.current().attempt == 1:
        raise RetryAfter(0.1, "HTTP 429 Too Many Requests", slow_down=0.25, slow_for=60)
    return "done"
