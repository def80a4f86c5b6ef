"""Tasks whose outcomes are hard to write: the outcome tests run them on real workers.

The schema comes from ``TENURE_TEST_SCHEMA`` so every test gets its own.
"""

from __future__ import annotations

import os
from typing import Any

from tenure import Discard, Registry, RetryAfter

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


# -- the fuzz test's tasks ------------------------------------------------------------
# A recipe is JSON, so it reaches the worker whatever it describes; the task builds the
# value from it there: lone surrogates, NUL, NaN, huge strings, deep nesting, odd types.


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be shown")


def build(recipe: Any) -> Any:
    """The Python value a recipe describes (see tests/test_fuzz.py)."""
    if not isinstance(recipe, dict):
        return recipe  # a JSON scalar stands for itself
    kind, arg = next(iter(recipe.items()))
    if kind == "s":
        return "".join(chr(c) for c in arg)
    if kind == "f":
        return float(arg)
    if kind == "big":
        return "x" * int(arg)
    if kind == "deep":
        value: Any = 0
        for _ in range(int(arg)):
            value = [value]
        return value
    if kind == "list":
        return [build(r) for r in arg]
    if kind == "dict":
        return {build(k): build(v) for k, v in arg}
    if kind == "odd":
        return {
            "object": object(),
            "set": {1, 2},
            "bytes": b"\xff\xfe",
            "complex": 1j,
            "unprintable": _Unprintable(),
        }[arg]
    raise ValueError(f"unknown recipe {kind!r}")


@reg.task(queue="work", max_attempts=1)
def fuzzed(payload: dict) -> Any:
    """Return, raise or discard what the recipe builds."""
    value = build(payload["recipe"])
    action = payload["action"]
    if action == "return":
        return value
    if action == "raise":
        raise value if isinstance(value, BaseException) else RuntimeError(value)
    if action == "discard":
        raise Discard(value if isinstance(value, str) else repr(value))
    raise RetryAfter(0, value if isinstance(value, str) else "later")


@reg.task(queue="work", max_attempts=1)
def echo(payload: Any) -> Any:
    return payload
