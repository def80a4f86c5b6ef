"""What the commands take: durations, sizes, ``MODULE:REGISTRY``, and which database.

Rules:
- A value a user types wrong is refused by click in one line that names the flag.
- Every command that reads or operates on tasks takes ``--dsn``, ``--schema`` and
  ``--app`` (:func:`dsn_option`) and reads through a :class:`~tenure.client.Client`
  made with ``migrate=False`` (:func:`operator_client`): operators never change the
  schema.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import click

from tenure._durations import MAX_DURATION, parse_duration
from tenure.client import SCHEMA_ENV, Client, default_schema
from tenure.errors import ConfigError, TenureError
from tenure.registry import Registry

DSN_HELP = "PostgreSQL DSN (default: embedded)."


class DurationType(click.ParamType):  # type: ignore[type-arg]
    """A click parameter for durations such as ``15s`` or ``1m30s``, within bounds."""

    name = "duration"

    def __init__(
        self, *, minimum: timedelta | None = None, maximum: timedelta = MAX_DURATION
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(
                str(value),
                field=param.name if param and param.name else "value",
                minimum=self.minimum,
                maximum=self.maximum,
            )
        except TenureError as exc:
            self.fail(str(exc), param, ctx)


DURATION = DurationType()

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 2**10,
    "k": 2**10,
    "mb": 2**20,
    "m": 2**20,
    "gb": 2**30,
    "g": 2**30,
}


def parse_size(text: str) -> int:
    """``500MB``, ``2GB``, ``1048576`` → bytes; a malformed size is a ConfigError."""
    raw = text.strip().lower()
    digits = raw.rstrip("bkmg")
    unit = raw[len(digits) :]
    try:
        value = float(digits)
    except ValueError:
        value = -1.0
    if not 0 < value < math.inf or unit not in _SIZE_UNITS:  # nan fails the test too
        raise ConfigError(f"max_memory_per_child: {text!r} is not a size; write it like 500MB")
    return int(value * _SIZE_UNITS[unit])


def load_registry(target: str, *, hint: str = "MODULE:REGISTRY") -> Registry:
    """Import ``module:attribute`` and return the :class:`Registry` it names."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"{target!r} should look like myapp.tasks:reg", param_hint=hint)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(f"cannot import {module_name!r}: {exc}", param_hint=hint) from None
    registry = getattr(module, attr, None)
    if not isinstance(registry, Registry):
        raise click.BadParameter(f"{module_name}.{attr} is not a tenure Registry", param_hint=hint)
    return registry


def target(dsn: str | None, schema: str | None, app: str | None) -> tuple[str | None, str]:
    """The DSN and schema a command reads: ``--schema``, else the ``--app`` registry's
    schema, else ``TENURE_SCHEMA``, else ``tenure``; ``--dsn`` (or TENURE_DATABASE_URL),
    else the registry's DSN if it was given one, else the embedded server."""
    if app is None:
        return dsn, default_schema() if schema is None else schema
    registry = load_registry(app, hint="--app")
    return dsn or registry.client.configured_dsn, registry.schema if schema is None else schema


def dsn_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--dsn``, ``--schema`` and ``--app``; the command gets ``dsn`` and ``schema``."""

    @functools.wraps(f)
    def command(*args: Any, dsn: str | None, schema: str | None, app: str | None, **kw: Any) -> Any:
        dsn, schema = target(dsn, schema, app)
        return f(*args, dsn=dsn, schema=schema, **kw)

    command = click.option(
        "--app",
        metavar="MODULE:REGISTRY",
        help="Read the schema (and DSN, if it has one) of this app's registry, as "
        "`tenure worker` takes it, e.g. myapp.tasks:reg.",
    )(command)
    command = click.option(
        "--schema", help=f"tenure's schema (default: ${SCHEMA_ENV}, else tenure)."
    )(command)
    return click.option("--dsn", envvar="TENURE_DATABASE_URL", help=DSN_HELP)(command)


def operator_client(dsn: str | None, schema: str) -> Client:
    """A client that reads and operates on the schema but never creates or upgrades it."""
    return Client(dsn, schema=schema, migrate=False)
