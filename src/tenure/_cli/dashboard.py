"""``tenure dashboard``: serve the web dashboard (needs the ``dashboard`` extra)."""

from __future__ import annotations

import signal
import sys
from typing import Any

import click

from tenure._cli.params import dsn_option, operator_client
from tenure._untrusted import is_loopback

DEFAULT_DASHBOARD_PORT = 8484


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
    client = operator_client(dsn, schema)
    client.open()  # a missing or unreadable schema is one line now, not a page later
    try:
        app = create_app(client=client, schema=schema, token=auth_token, host=host, refresh=refresh)
        click.echo(f"tenure dashboard on http://{host}:{port}/ (schema {schema})", err=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        client.close()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    sys.exit(0)
