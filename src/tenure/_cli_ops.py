"""Operator commands: ``tasks``, ``queues``, ``workers``, ``prune`` and ``dashboard``.

Each is a thin shell over :class:`tenure.client.Client` (no SQL here) that prints a
rich table or one line. Mistakes an operator can make (an unknown task id, a worker
id prefix that names two workers, a bad filter) end in one line on stderr through
``tenure.cli.run``.

Every string read from the database is printed through :func:`tenure._untrusted.inert`
and as rich ``Text``: its control characters show as ``\x1b``-style escapes and its
brackets as brackets, never as terminal codes or rich markup.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import click

from tenure._untrusted import inert, is_loopback
from tenure.client import PRUNE_BATCH, TASK_STATES

DEFAULT_DASHBOARD_PORT = 8484


def dsn_option(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--schema", default="tenure", show_default=True, help="tenure's schema.")(f)
    return click.option(
        "--dsn", envvar="TENURE_DATABASE_URL", help="PostgreSQL DSN (default: embedded)."
    )(f)


def _client(dsn: str | None, schema: str) -> Any:
    from tenure.client import Client

    return Client(dsn, schema=schema, migrate=False)  # operators never change the schema


def _console() -> Any:
    from rich.console import Console

    return Console()


def shown(text: str, *, lines: bool = False) -> Any:
    """A database string as rich prints it: inert, and never read as markup."""
    from rich.text import Text

    return Text(inert(text, lines=lines))


def _json(value: Any) -> Any:
    """A payload or result, indented and coloured as JSON, inert."""
    from rich.syntax import Syntax

    return Syntax(inert(json.dumps(value, indent=2, default=str), lines=True), "json")


def _table(title: str, columns: list[str], rows: list[list[str]], numeric: set[str]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col, justify="right" if col in numeric else "left")
    for row in rows:
        table.add_row(*(shown(cell) for cell in row))
    return table


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[-1] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


# -- tasks ---------------------------------------------------------------------------


@click.group()
def tasks() -> None:
    """List, inspect, retry and cancel tasks."""


@tasks.command("list")
@dsn_option
@click.option("--queue", "-q")
@click.option("--state", "-s", type=click.Choice(TASK_STATES))
@click.option("--task", "task_name", help="Task name, e.g. myapp.tasks.parse_document.")
@click.option("--key", "partition_key", help="Partition key.")
@click.option("--before", type=click.IntRange(1, 2**63 - 1), help="Only ids below this one.")
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=50, show_default=True)
def tasks_list(
    dsn: str | None,
    schema: str,
    queue: str | None,
    state: str | None,
    task_name: str | None,
    partition_key: str | None,
    before: int | None,
    limit: int,
) -> None:
    """Tasks matching the filters, newest first."""
    rows = _client(dsn, schema).list_tasks(
        queue=queue,
        state=state,
        task_name=task_name,
        partition_key=partition_key,
        before=before,
        limit=limit,
    )
    table = _table(
        "tasks",
        ["id", "task", "queue", "state", "attempt", "key", "created", "finished", "last error"],
        [
            [
                str(r[0]),
                r[1],
                r[2],
                r[3],
                str(r[4]),
                r[8] or "",
                _when(r[9]),
                _when(r[10]),
                _short(r[11], 40),
            ]
            for r in rows
        ],
        {"id", "attempt"},
    )
    console = _console()
    console.print(table)
    if len(rows) == limit:
        console.print(f"more: --before {rows[-1][0]}")


@tasks.command("show")
@dsn_option
@click.argument("task_id", type=click.IntRange(1, 2**63 - 1))
def tasks_show(dsn: str | None, schema: str, task_id: int) -> None:
    """One task: its fields, payload, result and every attempt."""
    client = _client(dsn, schema)
    info = client.get(task_id)
    console = _console()
    fields = [
        ["task", info.task_name],
        ["queue", info.queue],
        ["state", info.state],
        ["attempt", str(info.attempt)],
        ["errors / crashes", f"{info.errors} / {info.crashes}"],
        ["priority", str(info.priority)],
        ["partition key", info.partition_key or "-"],
        ["created", _when(info.created_at)],
        ["finished", _when(info.finished_at)],
    ]
    console.print(_table(f"task {info.id}", ["field", "value"], fields, set()))
    console.print("payload")
    console.print(_json(info.payload))
    if info.result is not None:
        console.print("result")
        console.print(_json(info.result))
    attempts = client.attempts(task_id)
    console.print(
        _table(
            "attempts",
            ["attempt", "worker", "started", "ended", "took", "outcome", "error"],
            [
                [
                    str(a[0]),
                    str(a[1])[:8],
                    _when(a[2]),
                    _when(a[3]),
                    f"{(a[3] - a[2]).total_seconds():.2f}s",
                    a[4],
                    _short(a[5]),
                ]
                for a in attempts
            ],
            {"attempt", "took"},
        )
    )
    if info.last_error:
        console.print("last error")
        console.print(shown(info.last_error, lines=True))


@tasks.command("retry")
@dsn_option
@click.argument("task_id", type=click.IntRange(1, 2**63 - 1))
def tasks_retry(dsn: str | None, schema: str, task_id: int) -> None:
    """Queue a failed, quarantined or cancelled task again with fresh budgets."""
    client = _client(dsn, schema)
    state = client.get(task_id).state  # retry() answers "queued" for a queued task too
    if state in ("failed", "quarantined", "cancelled"):
        state = client.retry(task_id)
        if state == "queued":
            click.echo(f"task {task_id} queued again")
            return
    raise click.ClickException(
        f"task {task_id} is {state}; only failed, quarantined or cancelled tasks can be retried"
    )


@tasks.command("cancel")
@dsn_option
@click.argument("task_id", type=click.IntRange(1, 2**63 - 1))
def tasks_cancel(dsn: str | None, schema: str, task_id: int) -> None:
    """Cancel a waiting task now, or tell its worker to stop a running one."""
    state = _client(dsn, schema).cancel(task_id)
    if state == "cancelled":
        click.echo(f"task {task_id} cancelled")
    elif state == "cancelling":
        click.echo(f"task {task_id} is running; its worker stops it and records it cancelled")
    else:
        raise click.ClickException(f"task {task_id} already ended {state}")


# -- queues --------------------------------------------------------------------------


@click.group()
def queues() -> None:
    """Pause and resume queues."""


@queues.command("pause")
@dsn_option
@click.argument("queue")
def queues_pause(dsn: str | None, schema: str, queue: str) -> None:
    """Stop all claims from QUEUE; running work finishes, waiting work stays queued."""
    _client(dsn, schema).pause_queue(queue)
    click.echo(f"queue {queue} paused")


@queues.command("resume")
@dsn_option
@click.argument("queue")
def queues_resume(dsn: str | None, schema: str, queue: str) -> None:
    """Let workers claim from QUEUE again."""
    _client(dsn, schema).resume_queue(queue)
    click.echo(f"queue {queue} resumed")


# -- workers -------------------------------------------------------------------------


@click.group()
def workers() -> None:
    """List workers and drain them."""


@workers.command("list")
@dsn_option
@click.option("--all", "show_all", is_flag=True, help="Include workers that are gone.")
def workers_list(dsn: str | None, schema: str, show_all: bool) -> None:
    """Workers, live ones first: host, pid, state, leases and heartbeat."""
    rows = [w for w in _client(dsn, schema).workers() if show_all or w[3] != "gone"]
    now = datetime.now().astimezone()
    _console().print(
        _table(
            "workers",
            ["worker", "host", "pid", "state", "queues", "leases", "held", "running", "heartbeat"],
            [
                [
                    str(w[0]),
                    w[1],
                    str(w[2]),
                    w[3] + (" (drain asked)" if w[12] and w[3] == "active" else ""),
                    ",".join(w[4]),
                    str(w[13]),
                    str(w[10]),
                    str(w[11]),
                    f"{max(0.0, (now - w[8]).total_seconds()):.1f}s ago",
                ]
                for w in rows
            ],
            {"pid", "leases", "held", "running", "heartbeat"},
        )
    )


@workers.command("drain")
@dsn_option
@click.argument("worker_id")
def workers_drain(dsn: str | None, schema: str, worker_id: str) -> None:
    """Ask WORKER_ID (or a unique prefix of it) to drain, as SIGTERM would."""
    client = _client(dsn, schema)
    live = [str(w[0]) for w in client.workers() if w[3] != "gone"]
    matches = [w for w in live if w.startswith(worker_id.lower())] if worker_id else []
    if len(matches) != 1:
        found = "no live worker" if not matches else f"{len(matches)} live workers"
        raise click.ClickException(
            f"{found} with an id starting {worker_id!r}; see tenure workers list"
        )
    if not client.drain_worker(matches[0]):
        raise click.ClickException(f"worker {matches[0]} is gone")
    click.echo(f"worker {matches[0]} asked to drain; it stops claiming at its next heartbeat")


# -- prune ---------------------------------------------------------------------------


def make_prune(duration: click.ParamType[Any]) -> click.Command:
    @click.command("prune")
    @dsn_option
    @click.option(
        "--older-than",
        type=duration,
        required=True,
        help="Delete finished tasks (and their attempts) that ended longer ago, e.g. 7d.",
    )
    def prune(dsn: str | None, schema: str, older_than: timedelta) -> None:
        """Delete finished tasks older than --older-than, in bounded batches."""
        batches: list[float] = []
        deleted = _client(dsn, schema).prune(
            older_than, on_batch=lambda _n, seconds: batches.append(seconds)
        )
        click.echo(
            f"pruned {deleted} finished task{'s' if deleted != 1 else ''} in {len(batches)} "
            f"batch{'es' if len(batches) != 1 else ''} of at most {PRUNE_BATCH} "
            f"(longest {max(batches) * 1000:.0f} ms)"
        )

    return prune


# -- dashboard -----------------------------------------------------------------------


@click.command()
@dsn_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=DEFAULT_DASHBOARD_PORT, show_default=True
)
@click.option(
    "--auth-token",
    envvar="TENURE_DASHBOARD_TOKEN",
    help="Token every request must carry (required when binding beyond localhost).",
)
@click.option(
    "--refresh",
    type=click.IntRange(1, 3600),
    default=3,
    show_default=True,
    help="Seconds between live refreshes.",
)
def dashboard(
    dsn: str | None,
    schema: str,
    host: str,
    port: int,
    auth_token: str | None,
    refresh: int,
) -> None:
    """Serve the web dashboard: queues, workers, tasks, and actions on them."""
    if not is_loopback(host) and not auth_token:
        raise click.UsageError(
            f"binding to {host} exposes the dashboard beyond this machine; pass --auth-token "
            "or set TENURE_DASHBOARD_TOKEN"
        )
    if auth_token is not None and len(auth_token) < 16:
        raise click.UsageError("--auth-token: use at least 16 characters")
    try:
        import uvicorn

        from tenure.dashboard import create_app
    except ImportError as exc:
        raise click.ClickException(
            f"the dashboard needs its extra ({exc.name} is missing): "
            "pip install 'tenure[dashboard]'"
        ) from None
    # uvicorn shuts down gracefully on SIGTERM, then raises it again: with its default action
    # that would kill the process before atexit leaves the embedded server. Exit 0 instead.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    client = _client(dsn, schema)
    client.open()  # a missing or unreadable schema is one line now, not a page later
    try:
        app = create_app(client=client, schema=schema, token=auth_token, host=host, refresh=refresh)
        click.echo(f"tenure dashboard on http://{host}:{port}/ (schema {schema})", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        client.close()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    sys.exit(0)
