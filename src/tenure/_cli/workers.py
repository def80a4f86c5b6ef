"""``tenure workers``: list workers, and ask one to drain."""

from __future__ import annotations

from datetime import datetime

import click

from tenure._cli.output import Column, console, emit_json, iso, json_option, print_table
from tenure._cli.params import dsn_option, operator_client
from tenure._store.rows import WorkerReport


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


def worker_cells(report: WorkerReport) -> list[str]:
    """held and running as a table shows them: ``-`` while they are not live."""
    return [str(report.held), str(report.running)] if report.live else ["-", "-"]


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
    rows = [w for w in operator_client(dsn, schema).workers() if show_all or w.state != "gone"]
    now = datetime.now().astimezone()
    ages = [max(0.0, (now - w.heartbeat_at).total_seconds()) for w in rows]
    if as_json:
        emit_json(
            {
                "schema": schema,
                "workers": [
                    {
                        "id": w.id,
                        "host": w.host,
                        "pid": w.pid,
                        "state": w.state,
                        "drain_requested": w.drain_requested,
                        "queues": w.queues,
                        "concurrency": w.concurrency,
                        "version": w.version,
                        "started_at": iso(w.started_at),
                        "heartbeat_at": iso(w.heartbeat_at),
                        "stopped_at": iso(w.stopped_at),
                        "heartbeat_age_seconds": round(age, 3),
                        "leases": w.leases,
                        **w.report_at(age).as_json(),
                    }
                    for w, age in zip(rows, ages, strict=True)
                ],
            }
        )
        return
    out = console()
    full_ids = out.width >= 110  # else the 8-character prefix `workers drain` takes
    print_table(
        out,
        "workers",
        worker_columns(slots=False),
        [
            [
                w.id if full_ids else w.id[:8],
                w.host,
                str(w.pid),
                w.state + (" (drain asked)" if w.drain_requested and w.state == "active" else ""),
                ",".join(w.queues),
                str(w.leases),
                *worker_cells(w.report_at(age)),
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
    client = operator_client(dsn, schema)
    live = [w.id for w in client.workers() if w.state != "gone"]
    matches = [w for w in live if w.startswith(worker_id.lower())] if worker_id else []
    if len(matches) != 1:
        found = "no live worker" if not matches else f"{len(matches)} live workers"
        raise click.ClickException(
            f"{found} with an id starting {worker_id!r}; see tenure workers list"
        )
    if not client.drain_worker(matches[0]):
        raise click.ClickException(f"worker {matches[0]} is gone")
    click.echo(f"worker {matches[0]} asked to drain; it stops claiming at its next heartbeat")
