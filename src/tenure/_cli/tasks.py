"""``tenure tasks``: list, show, retry and cancel tasks.

Every string read from the database is printed inert and as rich ``Text``
(:func:`~tenure._cli.output.shown`), never as terminal codes or rich markup.
"""

from __future__ import annotations

import click

from tenure._cli.output import (
    Column,
    console,
    emit_json,
    json_block,
    json_option,
    print_table,
    shown,
    when,
)
from tenure._cli.params import dsn_option, operator_client
from tenure._store.rows import TaskFilter
from tenure._untrusted import last_line
from tenure.states import RETRYABLE_NAMES, TASK_STATES, TaskState

TASK_ID = click.IntRange(1, 2**63 - 1)


@click.group()
def tasks() -> None:
    """List, inspect, retry and cancel tasks."""


@tasks.command("list")
@dsn_option
@click.option("--queue", "-q")
@click.option("--state", "-s", type=click.Choice(TASK_STATES))
@click.option("--task", "task_name", help="Task name, e.g. myapp.tasks.parse_document.")
@click.option("--key", "partition_key", help="Partition key.")
@click.option("--before", type=TASK_ID, help="Only ids below this one.")
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
def tasks_list(
    dsn: str | None,
    schema: str,
    queue: str | None,
    state: str | None,
    task_name: str | None,
    partition_key: str | None,
    before: int | None,
    limit: int,
    as_json: bool,
) -> None:
    """Tasks matching the filters, newest first.

    A succeeded task shows no last error: an earlier attempt's error is in its
    attempts (tenure tasks show ID)."""
    which = TaskFilter(queue, state, task_name, partition_key, before, limit)
    rows = operator_client(dsn, schema).store.tasks_list(which)
    more = rows[-1].id if len(rows) == limit else None
    if as_json:
        emit_json({"schema": schema, "tasks": [r.as_json() for r in rows], "before": more})
        return
    out = console()
    print_table(
        out,
        "tasks",
        [
            Column("id", numeric=True),
            Column("task", wrap=True),
            Column("queue", wrap=True, drop=3),
            Column("state"),
            Column("attempt", numeric=True, drop=2),
            Column("key", wrap=True, drop=5),
            Column("created", drop=4),
            Column("finished", drop=6),
            Column("last error", wrap=True, drop=1),
        ],
        [
            [
                str(r.id),
                r.task_name,
                r.queue,
                r.state,
                str(r.attempt),
                r.partition_key or "",
                when(r.created_at),
                when(r.finished_at),
                last_line(r.error, 40),
            ]
            for r in rows
        ],
    )
    if more is not None:
        out.print(f"more: --before {more}")


@tasks.command("show")
@dsn_option
@click.argument("task_id", type=TASK_ID)
@json_option
def tasks_show(dsn: str | None, schema: str, task_id: int, as_json: bool) -> None:
    """One task: its fields, payload, result and every attempt."""
    client = operator_client(dsn, schema)
    info = client.get(task_id)
    attempts = client.attempts(task_id)
    if as_json:
        emit_json(
            {
                "schema": schema,
                "task": info.as_json(),
                "attempts": [a.as_json() for a in attempts],
            }
        )
        return
    out = console()
    fields = [
        ["task", info.task_name],
        ["queue", info.queue],
        ["state", info.state],
        ["attempt", str(info.attempt)],
        ["errors / crashes", f"{info.errors} / {info.crashes}"],
        ["priority", str(info.priority)],
        ["partition key", info.partition_key or "-"],
        ["created", when(info.created_at)],
        ["finished", when(info.finished_at)],
    ]
    print_table(out, f"task {info.id}", [Column("field"), Column("value", wrap=True)], fields)
    out.print("payload")
    out.print(json_block(info.payload))
    if info.result is not None:
        out.print("result")
        out.print(json_block(info.result))
    print_table(
        out,
        "attempts",
        [
            Column("attempt", numeric=True),
            Column("worker", drop=3),
            Column("started", drop=2),
            Column("ended", drop=4),
            Column("took", numeric=True),
            Column("outcome"),
            Column("error", wrap=True, drop=1),
        ],
        [
            [
                str(a.attempt),
                a.worker_id[:8],
                when(a.started_at),
                when(a.ended_at),
                f"{a.seconds:.2f}s",
                a.outcome,
                last_line(a.error, 60),
            ]
            for a in attempts
        ],
    )
    if info.error:
        out.print("last error")
        out.print(shown(info.error, lines=True))
        return
    failed = [a for a in attempts if a.error]
    if failed and info.state == TaskState.SUCCEEDED:
        # it succeeded in the end: the error belongs to the attempt, not the task
        out.print(f"error of attempt {failed[-1].attempt} (a later attempt succeeded)")
        out.print(shown(failed[-1].error or "", lines=True))


@tasks.command("retry")
@dsn_option
@click.argument("task_id", type=TASK_ID)
def tasks_retry(dsn: str | None, schema: str, task_id: int) -> None:
    """Queue a failed, quarantined or cancelled task again with fresh budgets."""
    retried = operator_client(dsn, schema).retry(task_id)
    if not retried.requeued:
        raise click.ClickException(
            f"task {task_id} is {retried.state}, so nothing was done; only {RETRYABLE_NAMES} "
            "tasks can be retried"
        )
    click.echo(f"task {task_id} queued again")


@tasks.command("cancel")
@dsn_option
@click.argument("task_id", type=TASK_ID)
def tasks_cancel(dsn: str | None, schema: str, task_id: int) -> None:
    """Cancel a waiting task now, or tell its worker to stop a running one."""
    state = operator_client(dsn, schema).cancel(task_id)
    if state == "cancelled":
        click.echo(f"task {task_id} cancelled")
    elif state == "cancelling":
        click.echo(f"task {task_id} is running; its worker stops it and records it cancelled")
    else:
        raise click.ClickException(f"task {task_id} already ended {state}")
