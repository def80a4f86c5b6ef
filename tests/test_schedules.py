"""Schedules on a real PostgreSQL: published by workers, each tick sent once however
many workers look, caught up by policy after a fleet-wide outage, skipped while the
last tick's task runs, operated by the client and the CLI, and run by real workers
whose tasks read their tick from ``tenure.current()``."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from tenure import ConfigError, Registry
from tenure._store.worker import AsyncStore
from tenure._worker.scheduler import Scheduler
from tenure.errors import ScheduleNotFound
from tests.conftest import eventually, tenure_cli

BEATS_DDL = (
    "CREATE TABLE IF NOT EXISTS beats (schedule text, tick timestamptz, task_id bigint,"
    " attempt integer, pid integer, note text, at timestamptz NOT NULL DEFAULT now())"
)


@pytest.fixture
def reg(registry: Registry) -> Registry:
    @registry.task(name="report", queue="timed")
    def report(payload: dict) -> None: ...

    registry.client.open()  # migrate the schema
    return registry


def schedulers(reg: Registry, database_url: str, n: int) -> list[Scheduler]:
    """``n`` workers' schedulers, each on a connection of its own."""
    return [
        Scheduler(
            AsyncStore(database_url, reg.schema, f"scheduler-{i}"),
            reg,
            ["timed"],
            sorted(reg.tasks),
            timedelta(milliseconds=200),
        )
        for i in range(n)
    ]


async def publish(reg: Registry, database_url: str) -> tuple[list[str], list[str]]:
    store = AsyncStore(database_url, reg.schema, "publish")
    try:
        return await store.publish_schedules(list(reg.schedules.values()), tasks=sorted(reg.tasks))
    finally:
        await store.close()


async def passes(found: list[Scheduler], times: int = 1) -> None:
    try:
        for _ in range(times):
            await asyncio.gather(*(s.run_once() for s in found))
    finally:
        for s in found:
            await s.store.close()


def ticks_of(db: psycopg.Connection[Any], name: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT tick, outcome, task_id FROM schedule_ticks WHERE schedule = %s ORDER BY tick",
        (name,),
    ).fetchall()


def test_workers_publish_code_schedules_and_remove_those_the_code_no_longer_declares(
    reg: Registry, database_url: str, db: psycopg.Connection[Any]
) -> None:
    # Given a registry declaring two schedules, and an operator's third for its task
    reg.schedule("report", name="hourly", cron="0 * * * *", payload={"n": 1})
    reg.schedule("report", name="often", every=timedelta(minutes=5), payload={"n": 2})
    reg.add_schedule("report", name="ops", every=600, payload={"n": 3})
    # When a worker starts, then another of the same code
    first = asyncio.run(publish(reg, database_url))
    again = asyncio.run(publish(reg, database_url))
    # Then the first wrote both and the second changed nothing
    assert first == (["hourly", "often"], []) and again == ([], [])
    reg.client.pause_schedule("often")
    # When a release changes one schedule and no longer declares the other
    reg.schedules.pop("often")
    reg.schedules.pop("hourly")
    reg.schedule("report", name="hourly", cron="30 * * * *", payload={"n": 1})
    assert asyncio.run(publish(reg, database_url)) == (["hourly"], ["often"])
    # Then the changed one starts again from its next tick, the removed one is gone,
    # and the operator's schedule of the same task stays
    rows = {r.name: r for r in reg.client.schedules()}
    assert sorted(rows) == ["hourly", "ops"]
    assert rows["hourly"].cron == "30 * * * *" and rows["hourly"].next_tick is None
    assert rows["ops"].source == "operator" and rows["hourly"].source == "code"
    # And an operator cannot overwrite a schedule the code declares
    with pytest.raises(ConfigError, match="'hourly' is declared in code"):
        reg.add_schedule("report", name="hourly", every=60, payload={})


def test_four_workers_looking_at_once_send_each_tick_once(
    reg: Registry, database_url: str, db: psycopg.Connection[Any]
) -> None:
    # Given a schedule every second and four workers' schedulers
    reg.schedule("report", name="each-second", every=timedelta(seconds=1), payload={})
    asyncio.run(publish(reg, database_url))
    found = schedulers(reg, database_url, 4)

    # When all four run their loops for four seconds
    async def loops() -> None:
        for s in found:
            s.start()
        await asyncio.sleep(4.2)
        for s in found:
            await s.stop()

    asyncio.run(loops())
    asyncio.run(passes(found, 0))  # close their connections
    # Then the ticks are one second apart, none left out, each sent once by one of them
    ticks = ticks_of(db, "each-second")
    assert len(ticks) >= 3, ticks
    assert {b[0] - a[0] for a, b in zip(ticks, ticks[1:], strict=False)} == {timedelta(seconds=1)}
    assert {t[1] for t in ticks} == {"sent"}
    sent = db.execute(
        "SELECT schedule_tick, count(*) FROM tasks WHERE schedule = 'each-second' GROUP BY 1"
    ).fetchall()
    assert sorted(sent) == [(t[0], 1) for t in ticks]
    assert sum(s.counts["sent"] for s in found) == len(ticks)
    # And each was sent within a fraction of a second of its tick
    late = db.execute(
        "SELECT max(fired_at - tick) FROM schedule_ticks WHERE schedule = 'each-second'"
    ).fetchone()
    assert late is not None and late[0] < timedelta(seconds=1), late


@pytest.mark.parametrize(
    ("catch_up", "max_catch_up", "sent", "missed"),
    [("latest", 100, 1, 9), ("all", 100, 10, 0), ("all", 4, 4, 6)],
)
def test_after_a_fleet_wide_outage_of_ten_minutes_the_policy_decides_what_is_sent(
    reg: Registry,
    database_url: str,
    db: psycopg.Connection[Any],
    catch_up: str,
    max_catch_up: int,
    sent: int,
    missed: int,
) -> None:
    # Given a minutely schedule that a worker has looked at
    reg.schedule(
        "report", name="minutely", cron="* * * * *", payload={}, catch_up=catch_up,
        max_catch_up=max_catch_up,
    )  # fmt: skip
    asyncio.run(publish(reg, database_url))
    asyncio.run(passes(schedulers(reg, database_url, 1)))
    (upcoming,) = db.execute("SELECT next_tick FROM schedules").fetchone() or (None,)
    assert upcoming is not None
    # When the whole fleet was down for ten minutes: the table holds what it held when
    # the last worker stopped, a next tick ten minutes past
    db.execute(
        "UPDATE schedules SET next_tick = next_tick - interval '10 min',"
        " fire_at = next_tick - interval '10 min'"
    )
    asyncio.run(passes(schedulers(reg, database_url, 2)))
    # Then the policy sent the most recent ticks, counted the rest missed, and moved on
    ticks = ticks_of(db, "minutely")
    assert len(ticks) == sent and ticks[-1][0] == upcoming - timedelta(minutes=1)
    assert [t[0] for t in ticks] == [upcoming - timedelta(minutes=m) for m in range(sent, 0, -1)]
    (row,) = reg.client.schedules("minutely")
    assert (row.missed, row.next_tick) == (missed, upcoming)
    assert db.execute("SELECT count(*) FROM tasks WHERE schedule = 'minutely'").fetchone() == (
        sent,
    )


def test_a_schedule_that_does_not_overlap_skips_ticks_while_its_last_task_waits(
    reg: Registry, database_url: str, db: psycopg.Connection[Any]
) -> None:
    reg.schedule("report", name="one-at-a-time", every=1, payload={}, overlap=False)
    asyncio.run(publish(reg, database_url))

    def look_at_next_tick() -> None:
        db.execute("UPDATE schedules SET fire_at = now() - interval '1 s'")
        db.execute("UPDATE schedules SET next_tick = date_trunc('second', now())")
        asyncio.run(passes(schedulers(reg, database_url, 1)))

    asyncio.run(passes(schedulers(reg, database_url, 1)))
    look_at_next_tick()
    # Given the first tick's task still queued (no worker runs it)
    assert [t[1] for t in ticks_of(db, "one-at-a-time")] == ["sent"]
    # When the next ticks come
    eventually(lambda: (look_at_next_tick(), len(ticks_of(db, "one-at-a-time")) >= 3)[1])
    # Then they are recorded as skipped, with no task
    outcomes = ticks_of(db, "one-at-a-time")
    assert [t[1] for t in outcomes[1:]] == ["skipped_running"] * (len(outcomes) - 1)
    assert all(t[2] is None for t in outcomes[1:])
    # When the task is gone, the next tick sends again
    db.execute("DELETE FROM tasks WHERE schedule = 'one-at-a-time'")
    eventually(lambda: (look_at_next_tick(), ticks_of(db, "one-at-a-time")[-1][1] == "sent")[1])


def test_operators_pause_resume_trigger_and_delete_schedules(
    reg: Registry, database_url: str, db: psycopg.Connection[Any], operator_cli: Any
) -> None:
    cli = operator_cli
    reg.schedule("report", name="nightly", cron="0 2 * * *", timezone="Europe/Paris", payload={})
    asyncio.run(publish(reg, database_url))
    asyncio.run(passes(schedulers(reg, database_url, 1)))
    # The listing shows when it ticks and its next ticks (02:00 in Paris)
    listing = cli("schedules", "list")
    assert "nightly" in listing and "cron 0 2 * * * (Europe/Paris)" in listing
    (row,) = reg.client.schedules("nightly")
    nexts = row.upcoming(3, datetime.now().astimezone())
    assert len(nexts) == 3 and all(
        t.astimezone(row.when.zone).strftime("%H:%M") == "02:00" for t in nexts
    )
    # `tenure status` shows it too, in its table and its JSON
    assert "schedules" in cli("status") and "nightly" in cli("status")
    (listed,) = json.loads(cli("status", "--json"))["schedules"]
    assert listed["name"] == "nightly" and len(listed["next_ticks"]) == 3
    # A paused schedule sends nothing, yet a run asked for is sent, as its own tick
    assert "paused" in cli("schedules", "pause", "nightly")
    assert "one run asked for" in cli("schedules", "trigger", "nightly")
    asyncio.run(passes(schedulers(reg, database_url, 2)))
    assert [t[1] for t in ticks_of(db, "nightly")] == ["triggered"]
    (task_id,) = db.execute("SELECT id FROM tasks WHERE schedule = 'nightly'").fetchone() or (0,)
    shown = cli("schedules", "show", "nightly")
    assert "triggered" in shown and str(task_id) in shown
    # Resumed, it starts from its next tick after now, the pause not caught up
    cli("schedules", "resume", "nightly")
    asyncio.run(passes(schedulers(reg, database_url, 1)))
    (row,) = reg.client.schedules("nightly")
    assert not row.paused and row.next_tick is not None and row.missed == 0
    # Deleting a schedule the code declares says it comes back at the next start
    assert "publishes it again" in cli("schedules", "delete", "nightly")
    assert reg.client.schedules() == []
    # A name no schedule has is one line that lists the known ones
    with pytest.raises(ScheduleNotFound, match="no schedule 'nightly' in schema .*known: none"):
        reg.client.pause_schedule("nightly")
    # An operator adds one through the CLI, checked by the app's registry
    out = cli(
        "schedules", "add", "ops-report", "--app", "tests.apps.schedules:reg", "--task",
        "tests.apps.schedules.beat", "--every", "10m", "--payload", '{"note": "ops"}',
    )  # fmt: skip
    assert "schedule ops-report written: every 10 min; first tick" in out
    bad = tenure_cli(
        "schedules", "add", "ops-bad", "--app", "tests.apps.schedules:reg", "--task",
        "tests.apps.schedules.beat", "--cron", "every day", "--dsn", database_url,
        "--schema", reg.schema,
    )  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1, bad.stderr
    assert "schedule 'ops-bad': invalid cron expression 'every day'" in bad.stderr
    assert [r.name for r in reg.client.schedules()] == ["ops-report"]


@pytest.mark.acceptance
def test_a_real_worker_sends_each_tick_and_its_task_reads_the_tick(
    database_url: str, schema: str, db: psycopg.Connection[Any], workers: Any
) -> None:
    # Given the schedules app (every second, every minute) and one worker
    w = workers("--lease", "3s", "--queues", "timed", app="tests.apps.schedules:reg")
    eventually(lambda: _table_exists(db, "schedule_ticks"), what="the schema migrated")
    db.execute(BEATS_DDL)
    # When it has run a few seconds
    eventually(lambda: _beats(db) >= 3, timeout=20, what="three ticks run")
    # Then each run read its own schedule and tick, as tenure.current() gives them
    rows = db.execute(
        "SELECT b.schedule, b.tick, st.schedule, st.tick, b.note FROM beats b"
        " JOIN schedule_ticks st ON st.task_id = b.task_id WHERE b.schedule = 'every-second'"
    ).fetchall()
    assert rows and all(r[0] == r[2] and r[1] == r[3] and r[4] == "1s" for r in rows), rows
    assert all(r[1].tzinfo is not None and r[1].microsecond == 0 for r in rows)
    assert "schedules_published" in w.log()


def _table_exists(db: psycopg.Connection[Any], name: str) -> bool:
    return db.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone() == (True,)


def _beats(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM beats WHERE schedule = 'every-second'").fetchone()
    return int(row[0]) if row else 0


def test_a_retried_task_of_a_schedule_keeps_its_tick_and_metrics_show_each_schedule(
    reg: Registry, database_url: str, db: psycopg.Connection[Any]
) -> None:
    from tenure._worker.metrics import Metrics
    from tenure._worker.status import WorkerStatus

    # Given a tick sent and its task cancelled before it ran (now a finished task)
    reg.schedule("report", name="backfill", every=1, payload={})
    asyncio.run(publish(reg, database_url))
    asyncio.run(passes(schedulers(reg, database_url, 1)))
    db.execute("UPDATE schedules SET fire_at = now(), next_tick = date_trunc('second', now())")
    asyncio.run(passes(schedulers(reg, database_url, 1)))
    (task_id, tick) = db.execute(
        "SELECT id, schedule_tick FROM tasks WHERE schedule = 'backfill'"
    ).fetchone() or (0, None)
    assert tick is not None and reg.client.cancel(task_id) == "cancelled"
    # When an operator retries it
    assert reg.client.retry(task_id).requeued
    # Then it waits again with its schedule and tick, which its run reads
    assert db.execute(
        "SELECT schedule, schedule_tick FROM tasks WHERE id = %s", (task_id,)
    ).fetchone() == ("backfill", tick)

    # And /metrics says, per schedule, when it ticks next and when it last ticked
    async def scrape() -> str:
        metrics = Metrics()
        metrics.use(AsyncStore(database_url, reg.schema, "metrics"))
        try:
            return await metrics.render(WorkerStatus(schedule_ticks={"sent": 7}))
        finally:
            await metrics.close()

    text = asyncio.run(scrape())
    assert 'tenure_schedule_ticks_total{outcome="sent"} 7' in text
    assert (
        f'tenure_schedule_last_tick_timestamp_seconds{{schedule="backfill"}} {tick.timestamp():.3f}'
        in text
    )
    # (a second may pass between the test's update and the look: then one is missed)
    (row,) = reg.client.schedules("backfill")
    assert f'tenure_schedule_missed_ticks_total{{schedule="backfill"}} {row.missed}' in text
    assert 'tenure_schedule_paused{schedule="backfill"} 0' in text
    assert 'tenure_schedule_next_tick_seconds{schedule="backfill"} ' in text


def test_a_paused_schedule_sends_nothing_and_resumed_does_not_catch_up_the_pause(
    reg: Registry, database_url: str, db: psycopg.Connection[Any]
) -> None:
    # Given a schedule every second, looked at once
    reg.schedule("report", name="each-second", every=1, payload={})
    asyncio.run(publish(reg, database_url))
    asyncio.run(passes(schedulers(reg, database_url, 1)))
    reg.client.pause_schedule("each-second")
    # When it is paused through thirty ticks (its next tick thirty seconds past)
    db.execute(
        "UPDATE schedules SET next_tick = date_trunc('second', now()) - interval '30 s',"
        " fire_at = now() - interval '30 s'"
    )
    asyncio.run(passes(schedulers(reg, database_url, 2), times=2))
    # Then nothing was sent while paused
    assert ticks_of(db, "each-second") == []
    # When it is resumed and looked at
    reg.client.resume_schedule("each-second")
    asyncio.run(passes(schedulers(reg, database_url, 1), times=2))
    # Then the thirty ticks of the pause are neither sent nor counted missed: it goes on
    # from its next tick after the resume
    (row,) = reg.client.schedules("each-second")
    assert row.missed == 0 and len(ticks_of(db, "each-second")) <= 1
    (resumed_at,) = db.execute("SELECT updated_at FROM schedules").fetchone() or (None,)
    assert row.next_tick is not None and row.next_tick > resumed_at - timedelta(seconds=1)


def test_a_worker_that_planned_from_an_old_definition_sends_nothing(
    reg: Registry, database_url: str, db: psycopg.Connection[Any]
) -> None:
    # Given a due schedule that a worker has read and planned
    reg.schedule("report", name="changing", every=1, payload={"v": 1})
    asyncio.run(publish(reg, database_url))
    asyncio.run(passes(schedulers(reg, database_url, 1)))
    db.execute("UPDATE schedules SET fire_at = now(), next_tick = date_trunc('second', now())")

    async def stale_fire() -> list[Any]:
        store = AsyncStore(database_url, reg.schema, "stale")
        try:
            (due,) = (await store.schedules_due(
                queues=["timed"], names=sorted(reg.tasks), skip=[], limit=10)).due  # fmt: skip
            # When the code changes the schedule before that worker fires it
            reg.schedules.clear()
            reg.schedule("report", name="changing", every=2, payload={"v": 2})
            assert await store.publish_schedules(
                list(reg.schedules.values()), tasks=sorted(reg.tasks)
            ) == (["changing"], [])
            return await store.schedule_fire(
                due, reg.get("report").options, ticks=[due.next_tick], missed=0,
                next_tick=due.next_tick + timedelta(seconds=1),
                fire_at=due.next_tick + timedelta(seconds=1),
            )  # fmt: skip
        finally:
            await store.close()

    # Then its fire sends nothing and leaves the new definition to start afresh
    assert asyncio.run(stale_fire()) == []
    assert ticks_of(db, "changing") == []
    (row,) = reg.client.schedules("changing")
    assert row.every_seconds == 2 and row.next_tick is None and '"v": 2' in row.payload


def test_a_schedule_the_database_refuses_to_fire_does_not_hold_back_the_others(
    reg: Registry,
    database_url: str,
    db: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given two due schedules, one whose task the database refuses to store for good
    reg.schedule("report", name="good", every=1, payload={})
    reg.schedule("report", name="bad", every=1, payload={})
    asyncio.run(publish(reg, database_url))
    asyncio.run(passes(schedulers(reg, database_url, 1)))
    db.execute(
        "CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.schedule = 'bad' THEN RAISE EXCEPTION 'no room for it' USING ERRCODE = '23514';"
        " END IF; RETURN NEW; END $$"
    )
    db.execute(
        "CREATE TRIGGER refuse_bad BEFORE INSERT ON tasks"
        " FOR EACH ROW EXECUTE FUNCTION refuse_bad()"
    )

    def due_again() -> None:
        db.execute("UPDATE schedules SET fire_at = now(), next_tick = date_trunc('second', now())")

    # When workers look at them, three times
    with caplog.at_level(logging.ERROR, logger="tenure._worker.scheduler"):
        for _ in range(3):
            due_again()
            asyncio.run(passes(schedulers(reg, database_url, 1)))
            time.sleep(1.05)
    # Then the other schedule was sent every time, and the refusal said once per worker
    # which schedule and why
    assert len(ticks_of(db, "good")) == 3 and ticks_of(db, "bad") == []
    refused = [r.getMessage() for r in caplog.records if "schedule_fire_refused" in r.getMessage()]
    assert refused and all("schedule=bad" in m and "no room for it" in m for m in refused)
