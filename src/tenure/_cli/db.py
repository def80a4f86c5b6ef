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
@click.option("--dsn", envvar="TENURE_DATABASE_URL", help="Also read this server's schema.")
@click.option("--schema", envvar=SCHEMA_ENV, default=DEFAULT_SCHEMA, show_default=True)
def db_status(as_json: bool, dsn: str | None, schema: str) -> None:
    """The embedded server (running, pid, data dir, DSN, log, owners) and the schema
    (migrations applied, the functions' release, the releases it serves)."""
    import json

    server = _embedded_server()
    stopped = server.reap()
    st = server.status()
    dsn = (dsn or "").strip() or (server.dsn if st["running"] else None)
    found, error = _schema_status(dsn, schema) if dsn else ((False, None), None)
    if as_json:
        out: dict[str, Any] = {**st, "reaped": stopped}
        if dsn:
            out["schema"] = {"error": error} if error else _schema_json(schema, found)
        click.echo(json.dumps(out, default=str))
        _dsn_env_note()
        if error:
            raise SystemExit(1)
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
    if error:
        raise click.ClickException(error)
    if dsn:
        for line in _schema_lines(schema, found):
            click.echo(line)


def _schema_status(dsn: str, schema: str) -> tuple[Any, str | None]:
    """Whether the schema exists and its status, or the one-line reason it could not
    be read."""
    import psycopg

    from tenure._db import connect as dbconnect
    from tenure._db.migrate import status
    from tenure.errors import TenureError

    try:
        with dbconnect.connect(dsn, "tenure-status") as conn:
            return status(conn, schema), None
    except TenureError as exc:
        return None, f"schema {schema!r}: {exc}"
    except psycopg.Error as exc:
        return None, f"schema {schema!r}: cannot read it: {dbconnect.describe(exc)}"


def _schema_json(schema: str, read: Any) -> dict[str, Any]:
    exists, found = read
    if found is None:
        return {"name": schema, "exists": exists, "tenure_tables": False}
    left = found.functions_left_by()
    return {
        "name": schema,
        "exists": True,
        "tenure_tables": True,
        "migrations": [{"name": n, "applied_at": t} for n, t in found.migrations],
        "pending": found.pending,
        "functions_applied": [{"name": n, "applied_at": t} for n, t in found.functions],
        "functions_release": left.release if left else None,
        "releases": [
            {"release": r.release, "serves_from": r.serves_from, "migrated_at": r.migrated_at}
            for r in found.releases
        ],
        "serves_from": found.newest.serves_from if found.newest else None,
        "this_release": found.release,
        "serves_this_release": found.serves_this(),
    }


def _when(t: Any) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S %Z}"


def _schema_lines(schema: str, read: Any) -> list[str]:
    """``db status``'s account of the schema, one fact a line."""
    exists, found = read
    if found is None:
        made = "exists but holds no tenure tables yet" if exists else "not created yet"
        return [f"schema {schema}: {made} (`tenure db migrate` or a worker migrates it)"]
    last = found.migrations[-1] if found.migrations else None
    pending = ", ".join(found.pending) or "nothing"
    lines = [
        f"schema {schema}: {len(found.migrations)} migrations applied"
        + (f", the last {last[0]} at {_when(last[1])}" if last else "")
        + f"; pending for this release: {pending}"
    ]
    lines += [
        f"  migrated by tenure {r.release} at {_when(r.migrated_at)} "
        f"(serves workers of {r.serves_from} and later)"
        for r in found.releases
    ]
    left = found.functions_left_by()
    name, at = found.functions[-1] if found.functions else ("none", None)
    last_unit = f"the last functions record is {name}{f' at {_when(at)}' if at else ''}"
    if left is not None:
        lines.append(f"functions: as tenure {left.release} left them")
    elif found.releases:
        lines.append(
            "functions: not as any recorded release left them (re-applied by a release "
            f"before 0.2.0, which records none, or edited by hand); {last_unit}"
        )
    else:
        lines.append(
            "functions: no release is recorded, so which one installed them cannot be "
            f"told; {last_unit}"
        )
    top = found.newest
    if top is not None:
        lines.append(f"oldest release served: {top.serves_from}")
    verdict = "served" if found.serves_this() else f"not served: upgrade to {top.serves_from}"
    lines.append(f"this is tenure {found.release}: {verdict}")
    return lines
