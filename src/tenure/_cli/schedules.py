"""``tenure schedules``: list, add, pause, resume, trigger and delete schedules.

Every string read from the database is printed inert (:func:`~tenure._cli.output.shown`).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import click

from tenure._cli.output import Column, console, emit_json, json_option, print_table, shown, when
from tenure._cli.params import DURATION, dsn_option, load_registry, operator_client
from tenure._store.schedule_rows import ScheduleRow
from tenure.errors import ConfigError
from tenure.schedules import CATCH_UP, DEFAULT_MAX_CATCH_UP, MAX_CATCH_UP

if TYPE_CHECKING:
    from rich.console import Console


@click.group()
def schedules() -> None:
    """Periodic tasks: list, add, pause, resume, trigger and delete schedules."""


def _period(row: ScheduleRow) -> str:
    return row.when.describe()


def _state(row: ScheduleRow) -> str:
    if row.paused:
        return "paused" + (", run asked" if row.triggered else "")
    return "run asked" if row.triggered else "active"


@schedules.command("list")
@dsn_option
@json_option
def schedules_list(dsn: str | None, schema: str, as_json: bool) -> None:
    """Every schedule: when it ticks, its next ticks, its last tick and that tick's task."""
    client = operator_client(dsn, schema)
    rows = client.schedules()
    now = client.store.dashboard_now()
    if as_json:
        emit_json({"schedules": [r.as_json(now) for r in rows], "now": now})
        return
    out = console()
    if not rows:
        out.print("no schedules (declare one with reg.schedule(...), or tenure schedules add)")
        return
    print_schedules(out, f"schedules in {schema}", rows, now)


def print_schedules(out: Console, title: str, rows: list[ScheduleRow], now: datetime) -> None:
    """The schedules table (``tenure schedules list`` and ``tenure status``)."""
    columns = [
        Column("name"), Column("task", drop=3), Column("when"), Column("state"),
        Column("next ticks"), Column("last tick", drop=1), Column("last task", drop=2),
        Column("missed", drop=2), Column("source", drop=4),
    ]  # fmt: skip
    table = []
    for r in rows:
        upcoming = ", ".join(when(t) for t in r.upcoming(2, now)) or "-"
        last_task = "-" if r.last_task_id is None else f"{r.last_task_id}"
        if r.last_task_id is not None:
            last_task += f" ({r.last_task_state or 'finished'})"
        table.append([
            r.name, r.task_name, _period(r), _state(r), upcoming,
            when(r.last_tick), last_task, f"{r.missed:,}", r.source,
        ])  # fmt: skip
    print_table(out, title, columns, table)


@schedules.command("show")
@dsn_option
@click.argument("name")
@click.option("--limit", "-n", type=click.IntRange(1, 1000), default=20, show_default=True)
@json_option
def schedules_show(dsn: str | None, schema: str, name: str, limit: int, as_json: bool) -> None:
    """One schedule and its recorded ticks, newest first: what each tick sent."""
    client = operator_client(dsn, schema)
    row = client.schedule(name)
    ticks = client.schedule_ticks(name, limit=limit)
    now = client.store.dashboard_now()
    if as_json:
        emit_json({"schedule": row.as_json(now), "ticks": [t.as_json() for t in ticks]})
        return
    out = console()
    out.print(shown(f"{row.name}: {row.task_name} {_period(row)}, {_state(row)}"))
    out.print(f"next ticks: {', '.join(when(t) for t in row.upcoming(3, now)) or '-'}")
    out.print(f"missed ticks: {row.missed:,} (catch_up={row.catch_up})")
    columns = [Column("tick"), Column("outcome"), Column("task"), Column("fired", drop=1)]
    table = [
        [when(t.tick), t.outcome, "-" if t.task_id is None else str(t.task_id), when(t.fired_at)]
        for t in ticks
    ]
    print_table(out, "ticks", columns, table)


@schedules.command("add")
@dsn_option
@click.argument("name")
@click.option("--task", "task_name", required=True, help="The task to send (registered in --app).")
@click.option("--cron", help="Five fields, or six with seconds first, e.g. '0 2 * * *'.")
@click.option("--every", type=DURATION, help="A fixed interval, e.g. 10m.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA name of the cron's clock.")
@click.option("--payload", default="{}", show_default=True, help="The payload, as JSON.")
@click.option("--catch-up", type=click.Choice(CATCH_UP), default="latest", show_default=True)
@click.option(
    "--max-catch-up",
    type=click.IntRange(1, MAX_CATCH_UP),
    default=DEFAULT_MAX_CATCH_UP,
    show_default=True,
)
@click.option("--jitter", type=DURATION, help="Delay each tick by up to this much.")
@click.option("--no-overlap", is_flag=True, help="Skip a tick while the last one's task runs.")
def schedules_add(
    dsn: str | None,
    schema: str,
    name: str,
    task_name: str,
    cron: str | None,
    every: timedelta | None,
    timezone: str,
    payload: str,
    catch_up: str,
    max_catch_up: int,
    jitter: timedelta | None,
    no_overlap: bool,
) -> None:
    """Add or change the operator's schedule NAME (--app names the registry whose task
    it sends, which checks the payload). A schedule declared in code is changed there."""
    app = click.get_current_context().params.get("app")
    if app is None:
        raise click.UsageError("tenure schedules add needs --app MODULE:REGISTRY (the task's app)")
    registry = load_registry(str(app), hint="--app")
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise ConfigError(
            f'--payload: not JSON ({exc}); write it like \'{{"folder": "in"}}\''
        ) from None
    built = registry.build_schedule(
        task_name, name=name, cron=cron, every=every, timezone=timezone, payload=value,
        catch_up=catch_up, max_catch_up=max_catch_up, jitter=jitter, overlap=not no_overlap,
    )  # fmt: skip
    client = operator_client(dsn, schema)
    client.write_schedule(built)
    (row,) = client.schedules(name)
    upcoming = row.upcoming(1, client.store.dashboard_now())
    first = f"first tick {when(upcoming[0])}" if upcoming else "paused (resume it to tick)"
    click.echo(f"schedule {name} written: {_period(row)}; {first}")


@schedules.command("pause")
@dsn_option
@click.argument("name")
def schedules_pause(dsn: str | None, schema: str, name: str) -> None:
    """Send no more ticks of NAME until it is resumed."""
    operator_client(dsn, schema).pause_schedule(name)
    click.echo(f"schedule {name} paused")


@schedules.command("resume")
@dsn_option
@click.argument("name")
def schedules_resume(dsn: str | None, schema: str, name: str) -> None:
    """Tick again from the first tick after now (the ticks of the pause are not sent)."""
    operator_client(dsn, schema).resume_schedule(name)
    click.echo(f"schedule {name} resumed")


@schedules.command("trigger")
@dsn_option
@click.argument("name")
def schedules_trigger(dsn: str | None, schema: str, name: str) -> None:
    """Send one run of NAME now, paused or not (the next worker to look sends it)."""
    operator_client(dsn, schema).trigger_schedule(name)
    click.echo(f"schedule {name}: one run asked for; a worker serving its queue sends it")


@schedules.command("delete")
@dsn_option
@click.argument("name")
def schedules_delete(dsn: str | None, schema: str, name: str) -> None:
    """Delete NAME (its recorded ticks stay)."""
    source = operator_client(dsn, schema).delete_schedule(name)
    click.echo(f"schedule {name} deleted")
    if source == "code":
        click.echo(
            "it is declared in code: a worker that declares it publishes it again when it "
            "starts; remove it from the code to stop it for good"
        )
