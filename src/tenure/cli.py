"""The ``tenure`` command line.

Every failure a user can cause (a wrong DSN, a bad flag, an unknown module) ends
in one line on stderr that says what to do, and a non-zero exit code.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
from datetime import timedelta
from typing import Any

import click

from tenure._cli_ops import dsn_option
from tenure._cli_output import emit_json, json_option
from tenure._durations import MAX_DURATION, format_duration, parse_duration
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
from tenure.client import EXACT_COUNT_CAP
from tenure.errors import ConfigError, TenureError
from tenure.registry import Registry


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


def _setup_logging(level: str, log_format: str = "text") -> None:
    from tenure.logs import setup_logging

    setup_logging(level, log_format)


@click.group()
@click.version_option(package_name="tenure")
def main() -> None:
    """tenure: a leased, fenced PostgreSQL task queue for fleets of workers."""


@main.command()
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
@click.option(
    "--lease",
    type=DurationType(minimum=MIN_LEASE, maximum=MAX_LEASE),
    default=format_duration(DEFAULT_LEASE),
    show_default=True,
    help="Lease length; renewed every third of it.",
)
@click.option(
    "--drain-timeout",
    type=DurationType(minimum=timedelta(0), maximum=MAX_DRAIN_TIMEOUT),
    default=format_duration(DEFAULT_DRAIN_TIMEOUT),
    show_default=True,
    help="How long SIGTERM waits for running tasks.",
)
@click.option(
    "--poll-interval",
    type=DurationType(minimum=MIN_POLL_INTERVAL, maximum=MAX_POLL_INTERVAL),
    default=format_duration(DEFAULT_POLL_INTERVAL),
    show_default=True,
    help="Claim at least this often without a notification.",
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
@click.option(
    "--log-summary",
    type=DurationType(minimum=MIN_LOG_SUMMARY, maximum=MAX_LOG_SUMMARY),
    default=format_duration(DEFAULT_LOG_SUMMARY),
    show_default=True,
    help="How often a busy worker logs a tasks_summary line.",
)
@click.option("--dsn", envvar="TENURE_DATABASE_URL", help="PostgreSQL DSN (default: embedded).")
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
    _setup_logging(log_level, log_format)
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


@main.group()
def db() -> None:
    """The database: migrations, the embedded server."""


@db.command("migrate")
@click.option("--dsn", envvar="TENURE_DATABASE_URL")
@click.option("--schema", envvar="TENURE_SCHEMA", default="tenure", show_default=True)
def db_migrate(dsn: str | None, schema: str) -> None:
    """Apply pending migrations."""
    from tenure._db import connect as dbconnect
    from tenure._db.migrate import migrate

    conn = dbconnect.connect(dbconnect.resolve_dsn(dsn), "tenure-migrate")
    with conn:
        applied = migrate(conn, schema)
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


def _embedded_server() -> Any:
    """The embedded server of TENURE_EMBEDDED_DIR (or the default data dir)."""
    from tenure.embedded import EmbeddedServer

    return EmbeddedServer()


def _dsn_env_note() -> None:
    """Say so when TENURE_DATABASE_URL makes tenure use another server than the embedded."""
    from tenure._db.connect import ENV_DSN

    if os.environ.get(ENV_DSN, "").strip():
        click.echo(f"note: {ENV_DSN} is set, so tenure uses that server, not this one", err=True)


def _reaped_note(stopped: bool) -> None:
    if stopped:
        click.echo(
            "note: stopped the embedded server: every process using it had died "
            "without stopping it",
            err=True,
        )


@db.command("url")
def db_url() -> None:
    """Print the DSN in use (TENURE_DATABASE_URL, else the running embedded server's)."""
    from tenure._db.connect import env_dsn

    env = env_dsn()
    if env is not None:
        click.echo(env)
        return
    server = _embedded_server()
    _reaped_note(server.reap())
    if server.status()["running"]:
        click.echo(server.dsn)
        return
    raise click.ClickException(
        "the embedded server is not running: start it with `tenure db start` (it then runs "
        "until `tenure db stop`), or set TENURE_DATABASE_URL"
    )


@db.command("start")
def db_start() -> None:
    """Start the embedded server and keep it running until `tenure db stop`."""
    server = _embedded_server()
    started = server.pin()
    pid = server.status()["pid"]
    if started:
        click.echo(f"embedded server started (pid {pid}); it runs until `tenure db stop`")
    else:
        click.echo(f"embedded server already running (pid {pid}); it runs until `tenure db stop`")
    click.echo(server.dsn)
    _dsn_env_note()


@db.command("stop")
@click.option("--force", is_flag=True, help="Stop it even while processes use it.")
def db_stop(force: bool) -> None:
    """Stop the embedded server (its data stays)."""
    from tenure.embedded import EmbeddedServerInUse

    server = _embedded_server()
    users = server.status()["owners"]
    try:
        stopped = server.stop(force=force)
    except EmbeddedServerInUse as exc:
        raise click.ClickException(
            f"not stopped: {exc}, or pass --force to stop it under them"
        ) from None
    if not stopped:
        click.echo("no embedded server was running")
        return
    click.echo("embedded server stopped")
    if users:
        click.echo(
            f"warning: {len(users)} process(es) were using it ({', '.join(map(str, users))})",
            err=True,
        )


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def db_status(as_json: bool) -> None:
    """Whether the embedded server runs, its pid, data dir, DSN, log and owners."""
    import json

    server = _embedded_server()
    stopped = server.reap()
    st = server.status()
    if as_json:
        click.echo(json.dumps({**st, "reaped": stopped}))
        _dsn_env_note()
        return
    _reaped_note(stopped)
    owners = st["owners"]
    kept = [
        *(["pinned by `tenure db start`"] if st["pinned"] else []),
        *([f"used by {len(owners)} process(es): {', '.join(map(str, owners))}"] if owners else []),
    ]
    if st["running"]:
        click.echo(f"embedded server: running (pid {st['pid']}), {'; '.join(kept) or 'unowned'}")
    else:
        click.echo("embedded server: not running (start it with `tenure db start`)")
    click.echo(f"data dir: {st['data_dir']}{'' if st['initialized'] else ' (not created yet)'}")
    click.echo(f"dsn: {st['dsn']}")
    click.echo(f"log: {st['log_file']}")
    _dsn_env_note()


@main.command()
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
    """Queues, limits, the largest partition keys, live workers and their leases.

    Stays fast over millions of queued or finished tasks: counts above --count-cap
    are estimates and are marked ~ (running and expired are always exact)."""
    from tenure._cli_ops import status_document, status_tables
    from tenure.client import Client

    client = Client(dsn, schema=schema, migrate=False)  # a read never creates the schema
    queues = client.queue_counts(cap=count_cap)
    limits = client.execute("status_limits", {})
    keys = client.key_counts(top_keys) if top_keys else []
    workers = client.execute("status_workers", {})
    if as_json:
        emit_json(status_document(schema, queues, limits, keys, workers))
    else:
        status_tables(queues, limits, keys, workers, count_cap)


# Operator commands live in their own module; see tenure/_cli_ops.py.
def _add_operator_commands() -> None:
    from tenure import _cli_ops

    for command in (_cli_ops.tasks, _cli_ops.queues, _cli_ops.workers, _cli_ops.dashboard):
        main.add_command(command)
    main.add_command(_cli_ops.make_prune(DURATION))


_add_operator_commands()


def run(argv: list[str] | None = None) -> None:
    """Entry point: every error a user can cause is one line on stderr."""
    try:
        code = main.main(args=argv, prog_name="tenure", standalone_mode=False)
    except click.UsageError as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(130)
    except TenureError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    run()
