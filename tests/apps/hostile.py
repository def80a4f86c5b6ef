"""Tasks whose outcomes are hard to write: the outcome tests run them on real workers.

The schema comes from ``TENURE_TEST_SCHEMA`` so every test gets its own.
"""

from __future__ import annotations

import os
from typing import Any

from tenure import Registry

reg = Registry(schema=os.environ.get("TENURE_TEST_SCHEMA", "tenure_test"))

# A file name as Python decodes one that is not UTF-8: a lone surrogate in the text.
BAD_NAME = b"scan-\xff.pdf".decode("utf-8", "surrogateescape")


@reg.task(queue="work")
def ordinary(payload: dict) -> int:
    return int(payload["i"])


@reg.task(queue="work", max_attempts=1)
def surrogate_error(payload: dict) -> None:
    raise FileNotFoundError(f"cannot open {BAD_NAME}")


@reg.task(queue="work")
def huge_result(payload: dict) -> str:
    return "x" * int(payload["bytes"])


@reg.task(queue="work", max_attempts=1)
def unprintable_error(payload: dict) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    raise Unprintable()


@reg.task(queue="work")
def returns(payload: dict) -> Any:
    """Return what the payload says; the database may be told to refuse it."""
    return payload["value"]


@reg.task(queue="work", isolation="process", max_attempts=1)
def surrogate_error_in_process(payload: dict) -> None:
    raise FileNotFoundError(f"cannot open {BAD_NAME}")


@reg.task(queue="work", isolation="process")
def huge_result_in_process(payload: dict) -> str:
    return "x" * int(payload["bytes"])
