"""``tenure rates``: list, set and clear rate limits.

A limit is named ``task:NAME`` or ``queue:NAME``, as a whole, ``--each-key`` or for one
``--key``. Every string read from the database is printed inert.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click

from tenure._cli.output import Column, console, emit_json, json_option, print_table
from tenure._cli.params import dsn_option, operator_client
from tenure._store.rate_rows import RateRow
from tenure.errors import ConfigError
from tenure.rates import format_per_second

if TYPE_CHECKING:
    from rich.console import Console


@click.group()
def rates() -> None:
    """Rate limits: list them with their tokens, set one at run time, clear it."""


def _target(limit: str) -> dict[str, str]:
    scope, _, name = limit.partition(":")
    if scope not in ("task", "queue") or not name:
        raise ConfigError(f"a rate limit is task:NAME or queue:NAME, got {limit!r}")
    return {scope: name}


def _state(r: RateRow, now: datetime) -> str:
    parts = []
    if r.held_queue is not None:
        parts.append(f"holding back {r.held_queue}")
    left = r.slowed_left(now)
    if left is not None:
        parts.append(f"slowed to {r.slowed_to:.0%} for {left:.0f}s")
    return ", ".join(parts) or "-"


def print_rates(out: Console, title: str, rows: list[RateRow], now: datetime) -> None:
    """The rate limits table (``tenure rates list`` and ``tenure status``)."""
    columns = [
        Column("limit", wrap=True), Column("rate", numeric=True), Column("tokens", numeric=True),
        Column("recent", numeric=True), Column("state", wrap=True), Column("buckets", drop=2),
        Column("source", drop=1),
    ]  # fmt: skip
    table = []
    for r in rows:
        source = r.source
        if r.code_per_second is not None:
            source += f" (code: {format_per_second(r.code_per_second)})"
        table.append([
            r.limit, r.rate, f"{r.tokens:.1f}", r.recent_rate, _state(r, now), str(r.buckets),
            source,
        ])  # fmt: skip
    print_table(out, title, columns, table)


@rates.command("list")
@dsn_option
@click.argument("name", required=False)
@json_option
def rates_list(dsn: str | None, schema: str, name: str | None, as_json: bool) -> None:
    """Every rate limit in force (or those of the task or queue NAME): its rate, the
    fewest tokens its buckets hold, what they spent of late, and whether it holds a
    queue back or was slowed by a task."""
    client = operator_client(dsn, schema)
    rows = client.rates(name)
    now = client.store.dashboard_now()
    if as_json:
        emit_json({"rates": [r.as_json() for r in rows], "now": now})
        return
    out = console()
    if not rows:
        out.print("no rate limits (declare one with rate=..., or tenure rates set)")
        return
    print_rates(out, f"rate limits in {schema}", rows, now)


_KEY = click.option("--key", help="Only this partition key's rate.")
_EACH_KEY = click.option("--each-key", is_flag=True, help="The rate of each partition key.")


@rates.command("set")
@dsn_option
@click.argument("limit")
@click.argument("rate")
@click.option("--burst", type=float, help="Units at once (default: one second of the rate).")
@_KEY
@_EACH_KEY
def rates_set(
    dsn: str | None,
    schema: str,
    limit: str,
    rate: str,
    burst: float | None,
    key: str | None,
    each_key: bool,
) -> None:
    """Set LIMIT (task:NAME or queue:NAME) to RATE (50/s, 600/min) from the next claim;
    it wins over the code's rate until cleared."""
    target = _target(limit)
    client = operator_client(dsn, schema)
    done = client.set_rate(rate, key=key, each_key=each_key, burst=burst, **target)
    which = f"{limit}" + (f" key {key}" if key is not None else ", each key" if each_key else "")
    click.echo(f"rate of {which} set to {done}")


@rates.command("clear")
@dsn_option
@click.argument("limit")
@_KEY
@_EACH_KEY
def rates_clear(dsn: str | None, schema: str, limit: str, key: str | None, each_key: bool) -> None:
    """Clear an operator's rate of LIMIT: the code's rate, if any, holds again."""
    target = _target(limit)
    if not operator_client(dsn, schema).clear_rate(key=key, each_key=each_key, **target):
        raise ConfigError(f"no rate set by an operator for {limit}: see tenure rates list")
    click.echo(f"rate of {limit} cleared")
