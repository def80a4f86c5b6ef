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

import functools
import json
import signal
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import click

from tenure._cli_output import Column, emit_json, iso, json_option, print_table, shown
from tenure._untrusted import inert, is_loopback
from tenure.client import (
    PRUNE_BATCH,
    SCHEMA_ENV,
    TASK_STATES,
    queue_fields,
    reports_live,
    standing_error,
    task_fields,
)

DEFAULT_DASHBOARD_PORT = 8484

__all__ = ["dsn_option", "shown", "target"]


def target(dsn: str | None, schema: str | None, app: str | None) -> tuple[str | None, str]:
    """The DSN and schema a command reads: ``--schema``, else the ``--app`` registry's
    schema, else ``TENURE_SCHEMA``, else ``tenure``; ``--dsn`` (or TENURE_DATABASE_URL),
    else the registry's DSN if it was given one, else the embedded server."""
    from tenure.client import default_schema

    if app is None:
        return dsn, default_schema() if schema is None else schema
    from tenure.cli import load_registry

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
    return click.option(
        "--dsn", envvar="TENURE_DATABASE_URL", help="PostgreSQL DSN (default: embedded)."
    )(command)


def _client(dsn: str | None, schema: str) -> Any:
    from tenure.client import Client

    return Client(dsn, schema=schema, migrate=False)  # operators never change the schema


def _console() -> Any:
    from tenure._cli_output import console

    return console()


def _json(value: Any) -> Any:
    """A payload or result, indented and coloured as JSON, inert."""
    from rich.syntax import Syntax

    return Syntax(inert(json.dumps(value, indent=2, default=str), lines=True), "json")


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[-1] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def worker_counts(state: str, heartbeat_age: float, held: Any, running: Any) -> dict[str, Any]:
    """A worker's own counts for JSON: null while they do not describe it now (it is
    gone or late), with what it last reported beside them."""
    live = reports_live(state, heartbeat_age)
    return {
        "reports_live": live,
        "held": int(held) if live else None,
        "running": int(running) if live else None,
        "last_reported_held": int(held),
        "last_reported_running": int(running),
    }


def worker_columns(*, slots: bool) -> list[Column]:
    """The columns of a workers table (``slots``: with each one's concurrency)."""
    return [
        Column("worker"),
        Column("host", wrap=True, drop=2),
        Column("pid", numeric=True),
        Column("state", wrap=True),
        Column("queues", wrap=True, drop=1),
        *([Column("slots", numeric=True, drop=3)] if slots else []),
        Column("leases", numeric=True),
        Column("held", numeric=True, drop=4),
        Column("running", numeric=True),
        Column("heartbeat", numeric=True),
    ]


def worker_cells(state: str, heartbeat_age: float, held: Any, running: Any) -> list[str]:
    """held and running as a table shows them: ``-`` while they are not live."""
    if reports_live(state, heartbeat_age):
        return [str(held), str(running)]
    return ["-", "-"]


# -- status --------------------------------------------------------------------------


def status_document(
    schema: str,
    queues: list[tuple[Any, ...]],
    limits: list[tuple[Any, ...]],
    keys: list[tuple[Any, ...]],
    workers: list[tuple[Any, ...]],
) -> dict[str, Any]:
    """What ``tenure status --json`` prints: one document, stable keys."""
    return {
        "schema": schema,
        "queues": [queue_fields(q) for q in queues],
        "task_limits": [
            {
                "task": r[0],
                "running": int(r[3]),
                "max_concurrency": r[1],
                "max_concurrency_per_key": r[2],
            }
            for r in limits
        ],
        "partition_keys": [
            {
                "queue": k[0],
                "key": k[1],
                "queued": int(k[2]),
                "queued_estimated": bool(k[4]),
                "running": int(k[3]),
            }
            for k in keys
        ],
        "workers": [
            {
                "id": str(w[0]),
                "host": w[1],
                "pid": w[2],
                "state": w[3],
                "queues": list(w[4]),
                "concurrency": w[5],
                "version": w[6],
                "heartbeat_age_seconds": float(w[7]),
                "leases": int(w[8]),
                **worker_counts(w[3], float(w[7]), w[9], w[10]),
            }
            for w in workers
        ],
    }


def status_tables(
    queues: list[tuple[Any, ...]],
    limits: list[tuple[Any, ...]],
    keys: list[tuple[Any, ...]],
    workers: list[tuple[Any, ...]],
    count_cap: int,
) -> None:
    """What ``tenure status`` prints: tables that fit the terminal."""
    console = _console()
    estimated = False

    def count(value: Any, approx: Any) -> str:
        nonlocal estimated
        if approx:
            estimated = True
            return f"~{int(value)}"
        return str(value)

    def limit(value: Any, used: Any = None) -> str:
        if value is None:
            return "-"
        return f"{used}/{value}" if used is not None else str(value)

    print_table(
        console,
        "queues",
        [
            Column("queue", wrap=True),
            Column("queued", numeric=True),
            Column("sched", numeric=True),
            Column("running", numeric=True),
            Column("expired", numeric=True, drop=2),
            Column("failed", numeric=True),
            Column("quar", numeric=True, drop=3),
            Column("canc", numeric=True, drop=5),
            Column("oldest", numeric=True, drop=1),
            Column("per key", numeric=True, drop=6),
            Column("weight", numeric=True, drop=7),
        ],
        [
            [
                q[0] + (" (paused)" if q[12] else ""),
                count(q[1], q[13]),
                count(q[2], q[14]),
                str(q[3]) if q[9] is None else limit(q[9], q[3]),
                str(q[4]),
                *(count(v, q[15]) for v in q[5:8]),
                "-" if q[8] is None else f"{'≥' if q[13] else ''}{float(q[8]):.1f}s",
                limit(q[10]),
                str(q[11]),
            ]
            for q in queues
        ],
    )
    if limits:
        print_table(
            console,
            "task limits",
            [
                Column("task", wrap=True),
                Column("running/limit", numeric=True),
                Column("per key", numeric=True),
            ],
            [[str(r[0]), limit(r[1], r[3]), limit(r[2])] for r in limits],
        )
    if keys:
        print_table(
            console,
            "largest partition keys",
            [
                Column("queue", wrap=True),
                Column("key", wrap=True),
                Column("queued", numeric=True),
                Column("running", numeric=True),
            ],
            [
                [
                    str(k[0]),
                    "(none)" if k[1] is None else str(k[1]),
                    count(k[2], k[4]),
                    str(k[3]),
                ]
                for k in keys
            ],
        )
    print_table(
        console,
        "workers",
        worker_columns(slots=True),
        [
            [
                str(w[0])[:8],
                w[1],
                str(w[2]),
                w[3],
                ",".join(w[4]),
                str(w[5]),
                str(w[8]),
                *worker_cells(w[3], float(w[7]), w[9], w[10]),
                f"{float(w[7]):.1f}s ago",
            ]
            for w in workers
        ],
    )
    if estimated:
        console.print(
            f"~ estimate: more than {count_cap} tasks, so the count comes from the planner's "
            "statistics (queues) or a sample of the table's pages (keys), not a scan; "
            "≥ oldest: at least this old"
        )


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
    rows = _client(dsn, schema).list_tasks(
        queue=queue,
        state=state,
        task_name=task_name,
        partition_key=partition_key,
        before=before,
        limit=limit,
    )
    more = rows[-1][0] if len(rows) == limit else None
    if as_json:
        emit_json({"schema": schema, "tasks": [task_fields(r) for r in rows], "before": more})
        return
    console = _console()
    print_table(
        console,
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
                str(r[0]),
                r[1],
                r[2],
                r[3],
                str(r[4]),
                r[8] or "",
                _when(r[9]),
                _when(r[10]),
                _short(standing_error(r[3], r[11]), 40),
            ]
            for r in rows
        ],
    )
    if more is not None:
        console.print(f"more: --before {more}")


@tasks.command("show")
@dsn_option
@click.argument("task_id", type=click.IntRange(1, 2**63 - 1))
@json_option
def tasks_show(dsn: str | None, schema: str, task_id: int, as_json: bool) -> None:
    """One task: its fields, payload, result and every attempt."""
    client = _client(dsn, schema)
    info = client.get(task_id)
    attempts = client.attempts(task_id)
    if as_json:
        emit_json(
            {
                "schema": schema,
                "task": {
                    "id": info.id,
                    "task": info.task_name,
                    "queue": info.queue,
                    "state": info.state,
                    "attempt": info.attempt,
                    "errors": info.errors,
                    "crashes": info.crashes,
                    "priority": info.priority,
                    "partition_key": info.partition_key,
                    "created_at": iso(info.created_at),
                    "finished_at": iso(info.finished_at),
                    "last_error": info.error,
                    "payload": info.payload,
                    "result": info.result,
                },
                "attempts": [
                    {
                        "attempt": a[0],
                        "worker": str(a[1]),
                        "started_at": iso(a[2]),
                        "ended_at": iso(a[3]),
                        "seconds": (a[3] - a[2]).total_seconds(),
                        "outcome": a[4],
                        "error": a[5],
                    }
                    for a in attempts
                ],
            }
        )
        return
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
    print_table(console, f"task {info.id}", [Column("field"), Column("value", wrap=True)], fields)
    console.print("payload")
    console.print(_json(info.payload))
    if info.result is not None:
        console.print("result")
        console.print(_json(info.result))
    print_table(
        console,
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
    )
    if info.error:
        console.print("last error")
        console.print(shown(info.error, lines=True))
        return
    failed = [a for a in attempts if a[5]]
    if (
        failed and info.state == "succeeded"
    ):  # it succeeded in the end: the error belongs to the attempt, not the task
        console.print(f"error of attempt {failed[-1][0]} (a later attempt succeeded)")
        console.print(shown(failed[-1][5], lines=True))


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
@json_option
def workers_list(dsn: str | None, schema: str, show_all: bool, as_json: bool) -> None:
    """Workers, live ones first: host, pid, state, leases and heartbeat.

    held and running are what a worker reports of itself; they show as - once it is
    gone or its heartbeat is late (its leases still count until they expire)."""
    rows = [w for w in _client(dsn, schema).workers() if show_all or w[3] != "gone"]
    now = datetime.now().astimezone()
    ages = [max(0.0, (now - w[8]).total_seconds()) for w in rows]
    if as_json:
        emit_json(
            {
                "schema": schema,
                "workers": [
                    {
                        "id": str(w[0]),
                        "host": w[1],
                        "pid": w[2],
                        "state": w[3],
                        "drain_requested": bool(w[12]),
                        "queues": list(w[4]),
                        "concurrency": w[5],
                        "version": w[6],
                        "started_at": iso(w[7]),
                        "heartbeat_at": iso(w[8]),
                        "stopped_at": iso(w[9]),
                        "heartbeat_age_seconds": round(age, 3),
                        "leases": int(w[13]),
                        **worker_counts(w[3], age, w[10], w[11]),
                    }
                    for w, age in zip(rows, ages, strict=True)
                ],
            }
        )
        return
    console = _console()
    full_ids = console.width >= 110  # else the 8-character prefix `workers drain` takes
    print_table(
        console,
        "workers",
        worker_columns(slots=False),
        [
            [
                str(w[0]) if full_ids else str(w[0])[:8],
                w[1],
                str(w[2]),
                w[3] + (" (drain asked)" if w[12] and w[3] == "active" else ""),
                ",".join(w[4]),
                str(w[13]),
                *worker_cells(w[3], age, w[10], w[11]),
                f"{age:.1f}s ago",
            ]
            for w, age in zip(rows, ages, strict=True)
        ],
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
