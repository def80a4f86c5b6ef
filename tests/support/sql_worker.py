"""A worker played statement by statement: the named statements a worker runs, called
from a test against a real PostgreSQL (the SQL tier's tests and the chaos checks)."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from typing import Any

import psycopg

from tenure._db import sqlfiles

LEASE = timedelta(seconds=30)


class FakeWorker:
    """One worker's statements, issued by hand (the real ones, not copies)."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        names: list[str],
        queues: tuple[str, ...] = ("default",),
    ) -> None:
        self.id = uuid.uuid4()
        # Behind a test pooler, tenure's statements go through it, not the inspection conn.
        pooled = os.environ.get("TENURE_POOLER") == "transaction"
        self.conn = (
            psycopg.connect(
                os.environ["TENURE_TEST_POOLED_URL"], autocommit=True, prepare_threshold=None
            )
            if pooled
            else conn
        )
        self.schema = schema
        self.names = names
        self.queues = list(queues)

    def run(self, name: str, **params: Any) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(sqlfiles.query(name, self.schema), params)
        return cur.fetchall() if cur.description else []

    def claim(self, n: int = 10, lease: timedelta = LEASE) -> list[tuple[int, int]]:
        return self.rate_wait(n, lease)[0]

    def rate_wait(
        self, n: int = 10, lease: timedelta = LEASE
    ) -> tuple[list[tuple[int, int]], float | None]:
        """A claim of ``n``: (task, attempt) of each claimed, and the seconds a rate
        limit that held work back asks to wait (None: none did)."""
        rows = self.run(
            "task_claim",
            worker=self.id,
            queues=self.queues,
            names=self.names,
            limit=n,
            lease=lease,
            start=0,
        )
        waits = [r[10] for r in rows if r[1] == "rate_wait"]
        return [(r[0], r[5]) for r in rows if r[1] is None], (waits[0] if waits else None)

    def complete(
        self,
        task_id: int,
        attempt: int,
        outcome: str = "succeeded",
        error: str | None = None,
        delay: float = 0.0,
    ) -> dict[int, str]:
        rows = self.run(
            "task_complete_many",
            worker=self.id,
            ids=[task_id],
            attempts=[attempt],
            outcomes=[outcome],
            results=['{"ok": true}'],
            errors=[error],
            delays=[delay],
        )
        return {r[0]: r[1] for r in rows}

    def complete_and_claim(
        self, done: list[tuple[int, int]], n: int = 10
    ) -> tuple[dict[int, str], list[tuple[int, int]]]:
        """Successes for ``done`` (task, attempt) and a claim of ``n``, in one statement
        (the worker's usual round trip)."""
        rows = self.run(
            "task_complete_claim",
            worker=self.id,
            ids=[t for t, _ in done],
            attempts=[a for _, a in done],
            outcomes=["succeeded"] * len(done),
            results=[None] * len(done),
            errors=[None] * len(done),
            delays=[0.0] * len(done),
            queues=self.queues,
            names=self.names,
            limit=n,
            lease=LEASE,
            start=0,
        )
        verdicts = {r[0]: r[1] for r in rows if r[1] is not None}
        return verdicts, [(r[0], r[5]) for r in rows if r[1] is None]

    def renew(self, held: list[tuple[int, int]], surrendered: list[int] | None = None) -> set[int]:
        rows = self.run(
            "lease_renew_many",
            worker=self.id,
            state="active",
            held=len(held),
            running=len(held),
            lease=LEASE,
            ids=[h[0] for h in held],
            attempts=[h[1] for h in held],
            orphan_after=LEASE / 2,
            surrendered=surrendered or [],
            outcomes_pending=0,
            outcomes_stalled=None,
        )
        return set(rows[0][1])

    def promote(self) -> dict[str, int]:
        return dict(self.run("task_promote_due", max=1000))

    def publish_limits(self, name: str, limit: int | None, per_key: int | None = None) -> None:
        # as a starting worker does: the limits, then the running rows they apply to
        self.run("limits_sync", names=[name], limits=[limit], per_key=[per_key])
        self.run("limits_flag_running")


def expire_now(db: psycopg.Connection[Any], task_id: int) -> None:
    """Backdate a lease so it has expired by the database clock."""
    db.execute(
        "UPDATE tasks SET lease_expires_at = now() - interval '1 second' WHERE id = %s", (task_id,)
    )


def reap(w: FakeWorker) -> list[tuple[Any, ...]]:
    return w.run("lease_expire_many", max=1000)


def state_of(db: psycopg.Connection[Any], task_id: int) -> str:
    row = db.execute(
        "SELECT state FROM tasks WHERE id = %s UNION ALL "
        "SELECT state FROM finished_tasks WHERE id = %s",
        (task_id, task_id),
    ).fetchone()
    assert row is not None
    return str(row[0])
