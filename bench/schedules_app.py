"""The app of ``bench/schedules_load.py``: one no-op task and N schedules of it.

``TENURE_BENCH_SCHEDULES`` says how many, ``TENURE_BENCH_SCHEDULE_SHAPE`` how they
tick: ``hourly`` (one a minute of the hour each, spread: a fleet that is mostly idle)
or ``minutely`` (each once a minute, at a second of its own: about N/60 ticks a
second); the schema comes from ``TENURE_BENCH_SCHEMA``.
"""

from __future__ import annotations

import os

from tenure import Registry

reg = Registry(schema=os.environ.get("TENURE_BENCH_SCHEMA", "bench_schedules"))


@reg.task(queue="timed", name="bench.tick")
def tick(payload: dict) -> None:
    """Nothing: the benchmark measures the schedules, not the work."""


_SHAPES = {
    "hourly": lambda i: f"{i % 60} * * * *",
    "minutely": lambda i: f"{i % 60} * * * * *",
}

for _i in range(int(os.environ.get("TENURE_BENCH_SCHEDULES", "0"))):
    shape = os.environ.get("TENURE_BENCH_SCHEDULE_SHAPE", "hourly")
    reg.schedule(tick, name=f"bench-{_i:04d}", cron=_SHAPES[shape](_i), payload={"i": _i})
