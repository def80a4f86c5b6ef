"""``tenure prune``: delete old finished tasks in bounded batches."""

from __future__ import annotations

from datetime import timedelta

import click

from tenure._cli.params import DURATION, dsn_option, operator_client
from tenure.client import PRUNE_BATCH


@click.command("prune")
@dsn_option
@click.option(
    "--older-than",
    type=DURATION,
    required=True,
    help="Delete finished tasks (and their attempts) that ended longer ago, and the "
    "record of schedule ticks as old, e.g. 7d.",
)
def prune(dsn: str | None, schema: str, older_than: timedelta) -> None:
    """Delete finished tasks older than --older-than, in bounded batches, and the
    record of schedule ticks as old."""
    batches: list[float] = []
    client = operator_client(dsn, schema)
    deleted = client.prune(older_than, on_batch=lambda _n, seconds: batches.append(seconds))
    ticks = client.prune_schedule_ticks(older_than)
    buckets = client.prune_rate_buckets()
    click.echo(
        f"pruned {deleted} finished task{'s' if deleted != 1 else ''} in {len(batches)} "
        f"batch{'es' if len(batches) != 1 else ''} of at most {PRUNE_BATCH} "
        f"(longest {max(batches) * 1000:.0f} ms), {ticks} schedule "
        f"tick{'s' if ticks != 1 else ''} and {buckets} full rate "
        f"bucket{'s' if buckets != 1 else ''}"
    )
