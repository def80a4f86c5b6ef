"""Process tasks with a side effect after a sleep, for the tests that kill their worker.

The schema comes from ``TENURE_TEST_SCHEMA`` so every test gets its own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import tenure
from tenure import Registry

reg = Registry(schema=os.environ.get("TENURE_TEST_SCHEMA", "tenure_test"))


@reg.task(queue="work", isolation="process")
def sleeps_then_marks(payload: dict) -> int:
    """Write ``<dir>/started-<tag>-<attempt>`` (holding this process's pid), sleep ``s``,
    then write ``<dir>/done-<tag>-<attempt>``: the side effect."""
    name = f"{payload['tag']}-{tenure.current().attempt}"
    partial = Path(payload["dir"], f"partial-{name}")
    partial.write_text(str(os.getpid()))
    partial.replace(Path(payload["dir"], f"started-{name}"))  # whole, or not there
    time.sleep(float(payload["s"]))
    Path(payload["dir"], f"done-{name}").write_text(str(os.getpid()))
    return os.getpid()
