"""The rated no-op of ``make bench``'s ``tenure-rated`` drain, in a registry of its own:
a worker serving a rated name looks for rated work in each claim, and the plain drains
measure workers that serve none.

The schema comes from ``TENURE_BENCH_SCHEMA``, as in ``bench/bench_tasks.py``.
"""

from __future__ import annotations

import os
from typing import Any

from tenure import Rate, Registry

reg = Registry(schema=os.environ.get("TENURE_BENCH_SCHEMA", "bench_tenure"))


@reg.task(rate=Rate.parse("100000000/s", burst=1_000_000))
async def noop_rated(payload: dict[str, Any]) -> None:
    """A no-op under a rate limit far above any drain rate: what the rate's bucket costs
    each claim, against the plain no-op's drain."""
