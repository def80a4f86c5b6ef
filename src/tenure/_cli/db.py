"""``tenure db``: migrations, and the embedded server's start, stop, status and URL."""

from __future__ import annotations

import os
from typing import Any

import click

from tenure.client import DEFAULT_SCHEMA, SCHEMA_ENV


@click.group()
def db() -> None:
    """The database: migrations, the embedded server."""


@db.command("migrate")
@click.option("--dsn", envvar="TENURE_DATABASE_URL")
@click.option("--schema", envvar=SCHEMA_ENV, default=DEFAULT_SCHEMA, show_default=True)
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
