"""A task under a fleet-wide rate and a rate per key, for test_rate_fleet.py: it calls
nothing and returns at once, so only the limits decide when tasks start."""

from __future__ import annotations

import os

from tenure import Rate, Registry

reg = Registry(schema=os.environ.get("TENURE_TEST_SCHEMA", "tenure_test"))

TASK_RATE = Rate.parse("50/s", burst=10)
KEY_RATE = Rate.parse("5/s", burst=2)


@reg.task(name="call_api", rate=TASK_RATE, rate_per_key=KEY_RATE)
async def call_api(payload: dict) -> None:
    return None
