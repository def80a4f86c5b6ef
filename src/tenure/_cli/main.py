"""The ``tenure`` command group and its entry point.

Every failure a user can cause (a wrong DSN, a bad flag, an unknown module) ends
in one line on stderr that says what to do, and a non-zero exit code (:func:`run`).
"""

from __future__ import annotations

import sys

import click

from tenure._cli.dashboard import dashboard
from tenure._cli.db import db
from tenure._cli.prune import prune
from tenure._cli.queues import queues
from tenure._cli.rates import rates
from tenure._cli.schedules import schedules
from tenure._cli.status import status
from tenure._cli.tasks import tasks
from tenure._cli.worker import worker
from tenure._cli.workers import workers
from tenure.errors import TenureError


@click.group()
@click.version_option(package_name="tenure")
def main() -> None:
    """tenure: a leased, fenced PostgreSQL task queue for fleets of workers."""


for _command in (worker, db, status, tasks, queues, rates, schedules, workers, prune, dashboard):
    main.add_command(_command)


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
