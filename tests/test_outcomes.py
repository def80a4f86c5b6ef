"""Outcomes always land: no value a task returns or raises, and no refusal of the
database, stops a worker from recording the outcomes of other tasks.

Real worker processes on a real PostgreSQL; where the database must refuse one
outcome, a trigger on the test's own schema makes it refuse exactly that one.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from psycopg import errors as pgerrors

from tenure import Limits, PayloadInvalid, Registry
from tenure._db.connect import connection_lost, is_transient
from tenure.errors import DatabaseError
from tests.conftest import eventually
from tests.test_metrics import free_port, get

APP = "tests.apps.hostile:reg"


def all_finished(
    db: psycopg.Connection[Any], ids: list[int], timeout: float = 30
) -> dict[int, tuple[Any, ...]]:
    """Wait until every task of ``ids`` has finished; then :func:`finished` of them."""
    return eventually(
        lambda: (lambda f: f if len(f) == len(ids) else None)(finished(db, ids)),
        timeout=timeout,
        what=f"all {len(ids)} tasks finished",
    )


def failed_first_time(row: tuple[Any, ...]) -> str:
    """The error of a task that failed on its first attempt, with no crash."""
    state, attempt, _, crashes, error = row
    assert (state, attempt, crashes) == ("failed", 1, 0), row
    return str(error)


def finished(db: psycopg.Connection[Any], ids: list[int]) -> dict[int, tuple[Any, ...]]:
    rows = db.execute(
        "SELECT id, state, attempt, errors, crashes, last_error FROM finished_tasks "
        "WHERE id = ANY(%s)",
        (ids,),
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_one_unwritable_outcome_does_not_hold_back_the_others(
    hostile: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given a task raising with a lone surrogate in its message (a file name decoded
    # with surrogateescape), one returning 300 MB, and 20 ordinary tasks
    bad_error = hostile.surrogate_error.send({})
    bad_result = hostile.huge_result.send({"bytes": 300_000_000})
    good = [hostile.ordinary.send({"i": i}).id for i in range(20)]
    lease = 3.0
    # When one worker runs them
    started = time.monotonic()
    workers("--lease", f"{lease:g}s", "--concurrency", "4", app=APP)
    # Then all 20 succeed on their first attempt within two lease periods (plus the
    # worker's start-up), and the two bad ones fail with an error naming the cause
    done = all_finished(db, [*good, bad_error.id, bad_result.id])
    assert time.monotonic() - started < 30
    for tid in good:
        state, attempt, errors, crashes, _ = done[tid]
        assert (state, attempt, errors, crashes) == ("succeeded", 1, 0, 0), tid
    error = failed_first_time(done[bad_error.id])
    assert "cannot open scan-\\udcff.pdf" in error
    assert "not UTF-8; shown with escapes" in error
    error = failed_first_time(done[bad_result.id])
    assert "result too large: 286.1 MB, limit 10.0 MB" in error


def test_the_same_holds_for_process_tasks_and_unprintable_errors(
    hostile: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    bad_error = hostile.surrogate_error_in_process.send({})
    bad_result = hostile.huge_result_in_process.send({"bytes": 12_000_000})
    unprintable = hostile.unprintable_error.send({})
    good = [hostile.ordinary.send({"i": i}).id for i in range(10)]
    workers("--lease", "3s", app=APP)
    ids = [*good, bad_error.id, bad_result.id, unprintable.id]
    done = all_finished(db, ids, timeout=40)
    assert all(done[t][:4] == ("succeeded", 1, 0, 0) for t in good)
    assert done[bad_error.id][0] == "failed"
    assert "cannot open scan-\\udcff.pdf" in done[bad_error.id][4]
    assert done[bad_result.id][0] == "failed"
    assert "result too large: 11.4 MB, limit 10.0 MB" in done[bad_result.id][4]
    assert done[unprintable.id][0] == "failed"
    assert "Unprintable" in done[unprintable.id][4]


def refuse(db: psycopg.Connection[Any], marker: str, sqlstate: str) -> None:
    """Make the database refuse to finish a task whose result holds ``marker``."""
    db.execute(
        f"""
        CREATE FUNCTION refuse_{marker}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.result ? '{marker}' THEN
                RAISE EXCEPTION 'refused by the test' USING ERRCODE = '{sqlstate}';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_{marker} BEFORE INSERT ON finished_tasks
            FOR EACH ROW EXECUTE FUNCTION refuse_{marker}();
        """
    )


def test_an_outcome_the_database_refuses_becomes_an_error_that_says_why(
    hostile: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given the database refuses one task's result outright (program_limit_exceeded,
    # which psycopg files under OperationalError)
    poison = hostile.returns.send({"value": {"poison": True}})
    good = [hostile.returns.send({"value": i}).id for i in range(30)]
    refuse(db, "poison", "54000")
    workers("--lease", "3s", app=APP)
    ids = [*good, poison.id]
    done = all_finished(db, ids, timeout=30)
    # Then the others succeed first time and the refused one fails, saying why
    assert all(done[t][:4] == ("succeeded", 1, 0, 0) for t in good)
    error = failed_first_time(done[poison.id])
    assert "succeeded outcome could not be recorded: refused by the test" in error


def test_an_outcome_that_cannot_land_for_a_lease_makes_the_worker_unready(
    hostile: Any, workers: Any, db: psycopg.Connection[Any]
) -> None:
    # Given the database answers one task's outcome with a serialization failure,
    # again and again (transient by SQLSTATE, so it is retried, never replaced)
    stuck = hostile.returns.send({"value": {"conflict": True}})
    good = [hostile.returns.send({"value": i}).id for i in range(30)]
    refuse(db, "conflict", "40001")
    health, metrics = free_port(), free_port()
    w = workers(
        "--lease", "2s", "--health-port", str(health), "--metrics-port", str(metrics), app=APP
    )
    # Then the others land first time while it waits
    done = all_finished(db, good, timeout=30)
    assert all(done[t][:4] == ("succeeded", 1, 0, 0) for t in good)
    # and once it has waited longer than a lease, /readyz, /metrics and the workers
    # table (the dashboard's source) say so
    status, body = eventually(
        lambda: (lambda r: r if r[0] == 503 else None)(get(health, "/readyz")),
        timeout=15,
        what="/readyz 503",
    )
    assert "outcomes unwritten for" in body and "refused by the test" in body
    _, text = get(metrics, "/metrics")
    assert "tenure_outcomes_pending 1" in text
    stalled = float(text.split("\ntenure_outcomes_stalled_seconds ")[1].split()[0])
    assert stalled > 2.0
    row = eventually(
        lambda: db.execute(
            "SELECT outcomes_pending, outcomes_stalled_since FROM workers "
            "WHERE outcomes_stalled_since IS NOT NULL"
        ).fetchone(),
        timeout=10,
        what="the worker row shows the stall",
    )
    assert row[0] == 1
    assert finished(db, [stuck.id]) == {}
    # When the database takes it again, it lands and the worker is ready again
    db.execute("DROP TRIGGER refuse_conflict ON finished_tasks")
    eventually(lambda: finished(db, [stuck.id]), timeout=15, what="the stuck outcome landed")
    eventually(lambda: get(health, "/readyz")[0] == 200, timeout=15, what="/readyz 200 again")
    assert finished(db, [stuck.id])[stuck.id][:2] == ("succeeded", 1)
    assert w.alive()


def test_transience_is_decided_by_sqlstate_not_by_exception_class() -> None:
    # program_limit_exceeded and disk_full are OperationalErrors, and final
    assert isinstance(pgerrors.ProgramLimitExceeded(), psycopg.OperationalError)
    assert not is_transient(pgerrors.ProgramLimitExceeded())
    assert not is_transient(pgerrors.DiskFull())
    assert not is_transient(pgerrors.QueryCanceled())
    assert not is_transient(UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates"))
    for transient in (
        pgerrors.SerializationFailure(),
        pgerrors.DeadlockDetected(),
        pgerrors.AdminShutdown(),
        pgerrors.CannotConnectNow(),
        pgerrors.ConnectionFailure(),
        psycopg.OperationalError("server closed the connection unexpectedly"),
    ):
        assert is_transient(transient), transient
        wrapped = DatabaseError("x")
        wrapped.__cause__ = transient
        assert is_transient(wrapped)
    assert connection_lost(pgerrors.AdminShutdown())
    assert not connection_lost(pgerrors.SerializationFailure())


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"x": float("nan")}, "t: payload.x is NaN or infinite"),
        ({"x": [1, float("inf")]}, "t: payload.x[1] is NaN or infinite"),
        ({"x": "a\x00b"}, "t: payload.x contains a NUL character"),
        ({"k\x00": 1}, "t: payload key 'k\\x00' contains a NUL character"),
        ({"x": ["ok", "scan-\udcff.pdf"]}, "t: payload.x[1] is not valid UTF-8"),
        ({"x": "y" * 1_100_000}, "t: payload too large: 1.0 MB, limit 1.0 MB"),
    ],
)
def test_send_refuses_a_payload_the_worker_could_not_take_and_sends_nothing(
    database_url: str, schema: str, db: psycopg.Connection[Any], payload: Any, message: str
) -> None:
    reg = Registry(database_url, schema=schema)
    try:

        @reg.task(name="t")
        def t(p: dict) -> None: ...

        t.send({"x": 1})  # the schema exists: what follows must add nothing
        with pytest.raises(PayloadInvalid) as caught:
            t.send(payload)
        assert message in str(caught.value)
        with pytest.raises(PayloadInvalid):
            t.send_many([{"x": 2}, payload])
        assert db.execute("SELECT count(*) FROM tasks").fetchone() == (1,)
    finally:
        reg.client.close()


def test_a_payload_nested_deeper_than_the_limit_is_refused_at_send(
    database_url: str, schema: str, db: psycopg.Connection[Any]
) -> None:
    reg = Registry(database_url, schema=schema, limits=Limits(depth=10))
    try:

        @reg.task(name="t")
        def t(p: dict) -> None: ...

        deep: Any = 1
        for _ in range(10):
            deep = [deep]
        t.send({"x": deep[0]})  # 10 levels: at the limit
        with pytest.raises(PayloadInvalid, match="nested more than 10 levels deep"):
            t.send({"x": deep})
        # 200 levels: the worker's parser refuses it, so the default refuses it at send
        default = Registry(database_url, schema=schema)

        @default.task(name="t")
        def t2(p: dict) -> None: ...

        for _ in range(190):
            deep = [deep]
        with pytest.raises(PayloadInvalid, match="more than 64 levels"):
            t2.send({"x": deep})
        default.client.close()
        assert db.execute("SELECT count(*) FROM tasks").fetchone() == (1,)
    finally:
        reg.client.close()


def test_limits_are_checked_when_made() -> None:
    from tenure.errors import ConfigError

    with pytest.raises(ConfigError, match="limits.depth: must be a whole number from 1 to 128"):
        Limits(depth=500)
    with pytest.raises(ConfigError, match="limits.payload_bytes"):
        Limits(payload_bytes=0)
