"""``tenure status``: the server, queues, limits, the largest partition keys, live
workers, schedules."""

from __future__ import annotations

from typing import Any

import click

from tenure._cli.output import Column, console, emit_json, json_option, print_table
from tenure._cli.params import dsn_option, operator_client
from tenure._cli.rates import print_rates
from tenure._cli.schedules import print_schedules
from tenure._cli.workers import worker_cells, worker_columns
from tenure._store.rows import KeyBacklog, LimitStatus, LiveWorker, QueueStatus, ServerIdentity
from tenure.client import EXACT_COUNT_CAP


@click.command()
@dsn_option
@click.option(
    "--keys",
    "top_keys",
    type=click.IntRange(0, 1000),
    default=10,
    show_default=True,
    help="How many of the largest partition-key backlogs to show.",
)
@click.option(
    "--count-cap",
    type=click.IntRange(0, 10**9),
    default=EXACT_COUNT_CAP,
    show_default=True,
    help="Count tasks exactly up to this many per queue and state; above it show the "
    "planner's estimate, marked ~.",
)
@json_option
def status(dsn: str | None, schema: str, top_keys: int, count_cap: int, as_json: bool) -> None:
    """The server answering (primary or standby), queues, limits, the largest
    partition keys, live workers and their leases, schedules and their next ticks.

    Stays fast over millions of queued or finished tasks: counts above --count-cap
    are estimates and are marked ~ (running and expired are always exact)."""
    client = operator_client(dsn, schema)  # a read never creates the schema
    server = client.store.server_identity()
    queues = client.queue_counts(cap=count_cap)
    limits = client.store.status_limits()
    keys = client.key_counts(top_keys) if top_keys else []
    workers = client.store.status_workers()
    timed = client.schedules()
    rated = client.rates()
    now = client.store.dashboard_now()
    if as_json:
        document = status_document(schema, server, queues, limits, keys, workers)
        emit_json({
            **document,
            "rate_limits": [r.as_json() for r in rated],
            "schedules": [r.as_json(now) for r in timed],
        })  # fmt: skip
        return
    out = console()
    out.print(
        f"database {server.server} ({server.role}, PostgreSQL {server.version})",
        highlight=False,
    )
    held = {r.held_queue for r in rated if r.held_queue is not None}
    status_tables(queues, limits, keys, workers, count_cap, held)
    if rated:
        print_rates(out, "rate limits", rated, now)
    if timed:
        print_schedules(out, "schedules", timed, now)


def status_document(
    schema: str,
    server: ServerIdentity,
    queues: list[QueueStatus],
    limits: list[LimitStatus],
    keys: list[KeyBacklog],
    workers: list[LiveWorker],
) -> dict[str, Any]:
    """What ``tenure status --json`` prints: one document, stable keys."""
    return {
        "schema": schema,
        "database": server.as_json(),
        "queues": [q.as_json() for q in queues],
        "task_limits": [r.as_json() for r in limits],
        "partition_keys": [k.as_json() for k in keys],
        "workers": [w.as_json() for w in workers],
    }


def status_tables(
    queues: list[QueueStatus],
    limits: list[LimitStatus],
    keys: list[KeyBacklog],
    workers: list[LiveWorker],
    count_cap: int,
    held: set[str],
) -> None:
    """What ``tenure status`` prints: tables that fit the terminal. A queue in
    ``held`` waits on a rate limit (it is not stuck)."""
    out = console()
    estimated = False

    def count(value: int, approx: bool) -> str:
        nonlocal estimated
        if approx:
            estimated = True
            return f"~{value}"
        return str(value)

    def limit(value: int | None, used: int | None = None) -> str:
        if value is None:
            return "-"
        return f"{used}/{value}" if used is not None else str(value)

    def oldest(q: QueueStatus) -> str:
        if q.oldest_seconds is None:
            return "-"
        return f"{'≥' if q.queued_estimated else ''}{q.oldest_seconds:.1f}s"

    print_table(
        out,
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
                q.queue
                + (" (paused)" if q.paused else "")
                + (" (rate-limited)" if q.queue in held else ""),
                count(q.queued, q.queued_estimated),
                count(q.scheduled, q.scheduled_estimated),
                str(q.running)
                if q.max_concurrency is None
                else limit(q.max_concurrency, q.running),
                str(q.expired),
                *(count(v, q.finished_estimated) for v in (q.failed, q.quarantined, q.cancelled)),
                oldest(q),
                limit(q.max_concurrency_per_key),
                str(q.weight),
            ]
            for q in queues
        ],
    )
    if limits:
        print_table(
            out,
            "task limits",
            [
                Column("task", wrap=True),
                Column("running/limit", numeric=True),
                Column("per key", numeric=True),
            ],
            [
                [r.task_name, limit(r.max_concurrency, r.running), limit(r.max_concurrency_per_key)]
                for r in limits
            ],
        )
    if keys:
        print_table(
            out,
            "largest partition keys",
            [
                Column("queue", wrap=True),
                Column("key", wrap=True),
                Column("queued", numeric=True),
                Column("running", numeric=True),
            ],
            [
                [
                    k.queue,
                    "(none)" if k.key is None else k.key,
                    count(k.queued, k.estimated),
                    str(k.running),
                ]
                for k in keys
            ],
        )
    print_table(
        out,
        "workers",
        worker_columns(slots=True),
        [
            [
                w.id[:8],
                w.host,
                str(w.pid),
                w.state,
                ",".join(w.queues),
                str(w.concurrency),
                str(w.leases),
                *worker_cells(w.report_at(w.heartbeat_age_seconds)),
                f"{w.heartbeat_age_seconds:.1f}s ago",
            ]
            for w in workers
        ],
    )
    if estimated:
        out.print(
            f"~ estimate: more than {count_cap} tasks, so the count comes from the planner's "
            "statistics (queues) or a sample of the table's pages (keys), not a scan; "
            "≥ oldest: at least this old"
        )
