"""The tasks of ``make demo``: a stand-in for parsing a document, 20–60 ms each."""

from __future__ import annotations

import os
import random
import time

from tenure import Registry

reg = Registry(schema=os.environ.get("TENURE_DEMO_SCHEMA", "tenure_demo"))


@reg.task(queue="documents")
def parse_document(payload: dict) -> int:
    """Pretend to parse one document: sleep like I/O, return a page count."""
    time.sleep(random.uniform(0.02, 0.06))
    return int(payload["pages"])
