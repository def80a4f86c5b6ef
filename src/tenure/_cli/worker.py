"""``tenure worker``: one worker process, or a supervised pool of them."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import click

from tenure._cli.params import DSN_HELP, DurationType, load_registry, parse_size
from tenure._durations import format_duration
from tenure._worker.config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_LEASE,
    DEFAULT_LOG_SUMMARY,
    DEFAULT_POLL_INTERVAL,
    MAX_DRAIN_TIMEOUT,
    MAX_LEASE,
    MAX_LOG_SUMMARY,
    MAX_POLL_INTERVAL,
    MIN_LEASE,
    MIN_LOG_SUMMARY,
    MIN_POLL_INTERVAL,
    WorkerConfig,
    default_process_slots,
)
from tenure.errors import TenureError


def duration_option(
    flag: str, minimum: timedelta, maximum: timedelta, default: timedelta, help: str
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A duration flag within bounds, its default shown as it is typed (``15s``)."""
    return click.option(
        flag,
        type=DurationType(minimum=minimum, maximum=maximum),
        default=format_duration(default),
        show_default=True,
        help=help,
    )


@click.command()
@click.argument("target", metavar="MODULE:REGISTRY")
@click.option(
    "--queues", "-q", help="Comma-separated queues (default: every queue the registry uses)."
)
@click.option(
    "--concurrency",
    "-c",
    type=int,
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Tasks run at once by this process.",
)
@click.option(
    "--process-slots",
    type=int,
    default=None,
    help='Task processes at once for isolation="process" tasks (default: the CPU cores, '
    "shared among --processes, at most --concurrency).",
)
@duration_option(
    "--lease", MIN_LEASE, MAX_LEASE, DEFAULT_LEASE, "Lease length; renewed every third of it."
)
@duration_option(
    "--drain-timeout",
    timedelta(0),
    MAX_DRAIN_TIMEOUT,
    DEFAULT_DRAIN_TIMEOUT,
    "How long SIGTERM waits for running tasks.",
)
@duration_option(
    "--poll-interval",
    MIN_POLL_INTERVAL,
    MAX_POLL_INTERVAL,
    DEFAULT_POLL_INTERVAL,
    "Claim at least this often without a notification.",
)
@click.option(
    "--prefetch",
    type=int,
    default=None,
    help="Tasks claimed ahead of free slots (default: concurrency / 4).",
)
@click.option(
    "--poll-only",
    is_flag=True,
    help="For a pooler in transaction mode: no LISTEN, no session state; claims are polled.",
)
@click.option(
    "--max-memory-per-child",
    "max_memory",
    default=None,
    help="Replace a task process whose memory grew past this after a task (e.g. 500MB).",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 256),
    default=None,
    help="Run N supervised worker processes, restarted when they die.",
)
@duration_option(
    "--log-summary",
    MIN_LOG_SUMMARY,
    MAX_LOG_SUMMARY,
    DEFAULT_LOG_SUMMARY,
    "How often a busy worker logs a tasks_summary line.",
)
@click.option("--dsn", envvar="TENURE_DATABASE_URL", help=DSN_HELP)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="Readable lines, or one JSON object per line.",
)
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Serve /metrics on this port.")
@click.option(
    "--health-port", type=click.IntRange(0, 65535), help="Serve /livez and /readyz on this port."
)
@click.option(
    "--http-host",
    default="127.0.0.1",
    show_default=True,
    help="Address for the metrics and health ports (0.0.0.0 for a scraper or probe elsewhere).",
)
def worker(
    target: str,
    queues: str | None,
    concurrency: int,
    process_slots: int | None,
    lease: timedelta,
    drain_timeout: timedelta,
    poll_interval: timedelta,
    prefetch: int | None,
    poll_only: bool,
    max_memory: str | None,
    processes: int | None,
    log_summary: timedelta,
    dsn: str | None,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    health_port: int | None,
    http_host: str,
) -> None:
    """Run a worker process (or a supervised pool of them) for MODULE:REGISTRY.

    Under ``--processes``, child N serves metrics and health on the given ports + N.
    Task processes at once default to the CPU cores shared among the ``--processes``
    workers, at most ``--concurrency``; ``--process-slots`` sets them.
    """
    from tenure._worker.http import SurfacesConfig
    from tenure._worker.worker import run_worker

    registry = load_registry(target)
    if queues is None:
        chosen = tuple(registry.queues())
    else:
        chosen = tuple(q.strip() for q in queues.split(",") if q.strip())
        if not chosen:
            raise click.UsageError(
                f"queues: no queue named in --queues {queues!r}; give names like "
                "documents,emails, or leave the flag out to serve every queue of the registry"
            )
    if process_slots is None and processes is not None:
        process_slots = default_process_slots(concurrency, processes)
    try:
        config = WorkerConfig(
            queues=chosen,
            concurrency=concurrency,
            process_slots=process_slots,
            log_summary=log_summary,
            lease=lease,
            drain_timeout=drain_timeout,
            poll_interval=poll_interval,
            prefetch=prefetch,
            listen=not poll_only,
            max_memory_per_child=None if max_memory is None else parse_size(max_memory),
        )
    except TenureError as exc:
        raise click.UsageError(str(exc)) from None
    from tenure.logs import setup_logging

    setup_logging(log_level, log_format)
    if poll_only:  # behind a pooler in transaction mode: no session state at all
        os.environ["TENURE_POOLER"] = "transaction"
    if processes is not None:
        from tenure._worker.supervisor import Supervisor, child_argv

        argv, env = child_argv(sys.argv[1:])
        # Each child gets its share of the cores (the last --process-slots counts).
        argv += ["--process-slots", str(config.process_slot_count)]
        sys.exit(Supervisor(argv, processes, env).run())
    slot = int(os.environ.get("TENURE_SUPERVISED_SLOT", "0"))
    surfaces = SurfacesConfig(
        metrics_port=metrics_port + slot if metrics_port else metrics_port,
        health_port=health_port + slot if health_port else health_port,
        host=http_host,
    )
    try:
        code = run_worker(registry, config, dsn=dsn, surfaces=surfaces)
    except OSError as exc:  # the metrics or health port could not be bound
        raise click.ClickException(f"cannot serve metrics/health on {http_host}: {exc}") from None
    sys.exit(code)
