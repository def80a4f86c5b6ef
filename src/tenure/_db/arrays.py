"""PostgreSQL array literals for batch parameters, built in one pass.

The worker sends its batches (outcomes, lease renewals) as arrays. Built here as
the text form PostgreSQL parses (``{1,2,3}``, ``{"a b",NULL}``) and cast in the
statement (``%(ids)s::bigint[]``), a batch costs one string join instead of one
adapter call per element.
"""

from __future__ import annotations

from collections.abc import Iterable


def ints(values: Iterable[int]) -> str:
    """``{1,2,3}`` for a ``bigint[]`` or ``integer[]`` parameter."""
    return "{" + ",".join(map(str, values)) + "}"


def floats(values: Iterable[float]) -> str:
    """``{0.5,1.0}`` for a ``double precision[]`` parameter."""
    return "{" + ",".join(map(repr, values)) + "}"


def texts(values: Iterable[str | None]) -> str:
    """``{"a",NULL}`` for a ``text[]`` or ``jsonb[]`` parameter; None is NULL."""
    quoted = [
        "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in values
    ]
    return "{" + ",".join(quoted) + "}"
