"""Scheduled tasks the schedule tests run on real worker processes.

The schema comes from ``TENURE_TEST_SCHEMA``. Each run of ``beat`` records which
schedule and tick it was sent for, as ``tenure.current()`` gives them, in ``beats``
(made by the test), so a test can list the runs of every tick.
"""

from __future__ import annotations

import os
from datetime import timedelta

import psycopg

import tenure
from tenure import Registry

reg = Registry(schema=os.environ.get("TENURE_TEST_SCHEMA", "tenure_test"))


@reg.task(queue="timed")
def beat(payload: dict) -> None:
    ctx = tenure.current()
    with psycopg.connect(reg.client.dsn, autocommit=True) as conn:
        conn.execute(
            f'INSERT INTO "{reg.schema}".beats (schedule, tick, task_id, attempt, pid, note)'
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (ctx.schedule, ctx.tick, ctx.id, ctx.attempt, os.getpid(), payload.get("note")),
        )


reg.schedule(beat, name="every-second", every=timedelta(seconds=1), payload={"note": "1s"})
reg.schedule(beat, name="every-minute", cron="* * * * *", payload={"note": "1min"})
