"""``tenure queues``: pause and resume queues."""

from __future__ import annotations

import click

from tenure._cli.params import dsn_option, operator_client


@click.group()
def queues() -> None:
    """Pause and resume queues."""


@queues.command("pause")
@dsn_option
@click.argument("queue")
def queues_pause(dsn: str | None, schema: str, queue: str) -> None:
    """Stop all claims from QUEUE; running work finishes, waiting work stays queued."""
    operator_client(dsn, schema).pause_queue(queue)
    click.echo(f"queue {queue} paused")


@queues.command("resume")
@dsn_option
@click.argument("queue")
def queues_resume(dsn: str | None, schema: str, queue: str) -> None:
    """Let workers claim from QUEUE again."""
    operator_client(dsn, schema).resume_queue(queue)
    click.echo(f"queue {queue} resumed")
