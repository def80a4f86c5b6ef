"""Migration tier: schema.sql is the truth, migrations race safely, claims stay indexed."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tenure import Registry
from tenure._db import connect as dbconnect
from tenure._db import sqlfiles
from tenure._db.migrate import migrate
from tenure._maintenance.vacuumer import Vacuumer, VacuumResult
from tenure._store.worker import AsyncStore
from tenure.errors import DatabaseError
from tests import privilege
from tests.conftest import direct_url, eventually
from tests.test_regressions import fill_deep_backlog

CATALOG = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = %(s)s ORDER BY 1, 2""",
    "indexes": """
        SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %(s)s ORDER BY 1""",
    "constraints": """
        SELECT c.conrelid::regclass::text, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
        WHERE n.nspname = %(s)s ORDER BY 1, 2""",
    "functions": """
        SELECT p.proname, pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = %(s)s ORDER BY 1""",
    "reloptions": """
        SELECT c.relname, c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(s)s AND c.reloptions IS NOT NULL ORDER BY 1""",
    "statistics": """
        SELECT s.stxname, pg_get_statisticsobjdef(s.oid)
        FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
        WHERE n.nspname = %(s)s ORDER BY 1""",
    "sequences": """
        SELECT sequence_name, data_type, increment FROM information_schema.sequences
        WHERE sequence_schema = %(s)s ORDER BY 1""",
}


# Every function and index the schema holds: one added or dropped is a decision to make here.
FUNCTIONS = [
    "bucket_name", "bucket_open", "bucket_path", "bucket_visit", "cancel_task", "claim",
    "claim_limited", "claim_next", "claim_rated", "complete", "complete_and_claim",
    "complete_then_claim", "count_capped", "expire_leases", "has_limit", "is_limited", "is_rated",
    "notify_done", "promote_due", "queue_names", "rate_factor", "rate_slow_down", "rate_sweep",
    "rate_tokens", "rates_in_force", "requeue_task", "retry_task", "schedule_fire",
    "vtime_base", "vtime_step",
]  # fmt: skip
INDEXES = [
    "attempts_pkey", "finished_tasks_finished_at_idx", "finished_tasks_pkey",
    "finished_tasks_unsuccessful_idx", "idempotency_keys_pkey", "limits_pkey", "migrations_pkey",
    "queues_pkey", "rate_buckets_pkey", "rate_limits_pkey", "releases_pkey",
    "result_waiters_pkey", "schedule_ticks_fired_at_idx",
    "schedule_ticks_pkey", "schedule_ticks_task_idx", "schedules_due_idx", "schedules_pkey",
    "tasks_claim_idx",
    "tasks_claim_limited_idx", "tasks_key_tail_idx", "tasks_pkey", "tasks_running_expiry_idx",
    "tasks_running_limited_name_idx", "tasks_running_limited_queue_idx",
    "tasks_running_owner_idx", "tasks_scheduled_idx", "workers_live_idx", "workers_pkey",
]  # fmt: skip


def catalog(conn: psycopg.Connection[Any], schema: str) -> dict[str, list[tuple[Any, ...]]]:
    def normal(value: Any) -> Any:
        if isinstance(value, str):
            value = value.replace(f'"{schema}"', "SCHEMA").replace(schema, "SCHEMA")
            return re.sub(r"tenure_SCHEMA", "CHANNEL", value)
        return value

    return {
        key: [tuple(normal(v) for v in row) for row in conn.execute(q, {"s": schema}).fetchall()]
        for key, q in CATALOG.items()
    }


@pytest.mark.needs_owner  # migrates a fresh schema
def test_migrations_produce_exactly_schema_sql(
    database_url: str, admin_url: str, new_schema: Callable[[str], str]
) -> None:
    # tenure migrates a as the role under test; the admin applies the truth file (which
    # makes its own schema) to b
    a, b = new_schema(f"m_{uuid.uuid4().hex[:10]}"), f"s_{uuid.uuid4().hex[:10]}"
    with dbconnect.connect(database_url) as conn, dbconnect.connect(admin_url) as admin:
        try:
            applied = migrate(conn, a)
            assert applied[:-1] == sqlfiles.migration_names()
            digest = hashlib.sha256(sqlfiles.functions_sql(a)).hexdigest()[:16]
            assert applied[-1] == f"functions.sql@{digest}"
            admin.execute(sqlfiles.schema_sql(b))
            admin.execute(sqlfiles.functions_sql(b))
            migrated, truth = catalog(admin, a), catalog(admin, b)
            for key in CATALOG:
                assert migrated[key] == truth[key], (
                    f"{key} differ between migrations and schema.sql"
                )
            assert [name for name, _ in truth["functions"]] == FUNCTIONS
            assert [name for name, _ in truth["indexes"]] == INDEXES
        finally:
            admin.execute(f'DROP SCHEMA IF EXISTS "{b}" CASCADE')


@pytest.fixture
def sql_text_reread() -> Iterator[None]:
    """sqlfiles reads and binds each file once per process: forget that around a test
    that changes what the files say."""

    def forget() -> None:
        for cached in (sqlfiles._read, sqlfiles.bind, sqlfiles.functions_sql):
            cached.cache_clear()

    forget()
    yield
    forget()


@pytest.mark.needs_owner  # migrates a fresh schema
@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("10_fairness.sql", "RETURN 1.0 / coalesce(", "RETURN 1.0 / COALESCE("),
        ("70_status.sql", "SELECT queue FROM queued", "SELECT queued.queue FROM queued"),
        # a part, filled into complete, expire_leases and cancel_task
        ("finish_ended.sql", "FROM ended e", "FROM ended AS e"),
    ],
)
def test_a_change_to_any_function_file_reapplies_the_whole_unit(
    database_url: str,
    schema: str,
    sql_text_reread: None,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    old: str,
    new: str,
) -> None:
    # Given a schema migrated with the functions as they ship
    with dbconnect.connect(database_url) as conn:
        first = migrate(conn, schema)[-1]
        assert first.startswith("functions.sql@")
        # When one file of the unit says something else (here: the same, spelled otherwise)
        read = sqlfiles._read

        def edited(package: str, file: str) -> str:
            text = read(package, file)
            if (package, file) == ("tenure._db.functions", name):
                assert text.count(old) == 1, f"{name} changed: update this test's edit"
                return text.replace(old, new)
            return text

        monkeypatch.setattr(sqlfiles, "_read", edited)
        sqlfiles.bind.cache_clear()
        sqlfiles.functions_sql.cache_clear()
        # Then the next migration applies the whole unit again, as one new record
        second = migrate(conn, schema)
        assert len(second) == 1 and second[0].startswith("functions.sql@")
        assert second[0] != first
        # And the edit is what the database now runs
        body = conn.execute(
            "SELECT string_agg(prosrc, ' ') FROM pg_proc WHERE pronamespace = %s::regnamespace",
            (schema,),
        ).fetchone()
        assert body is not None and new in body[0]
        assert migrate(conn, schema) == []


def test_the_limit_and_bucket_helpers_are_inlined_and_name_buckets_as_before(
    database_url: str, schema: str
) -> None:
    with psycopg.connect(direct_url(database_url), autocommit=True) as conn:
        migrate(conn, schema)
        conn.execute(f"SET search_path = {schema}")
        # When the planner meets has_limit(), bucket_name() and bucket_path()
        plan = conn.execute(
            "EXPLAIN VERBOSE SELECT has_limit(q.max_concurrency, q.max_concurrency_per_key), "
            "bucket_name('qk', q.name, NULL, q.name), bucket_path(NULL, q.name, NULL) "
            "FROM queues q"
        ).fetchall()
        output = "\n".join(row[0] for row in plan)
        # Then it inlines each of them: the plan holds their expressions, not calls
        assert "(max_concurrency IS NOT NULL) OR (max_concurrency_per_key IS NOT NULL)" in output
        assert "COALESCE(name" in output, output
        for helper in ("has_limit", "bucket_name", "bucket_path"):
            assert helper not in output, output
        # And a bucket's name, and the path that keys its advisory lock, are the strings
        # earlier releases built, so workers of both lock the same bucket
        names = conn.execute(
            "SELECT bucket_name('q', 'mail', NULL, NULL), bucket_name('qk', 'mail', NULL, 'k'), "
            "bucket_name('t', NULL, 'send', NULL), bucket_name('tk', NULL, 'send', 'k'), "
            "bucket_path('mail', NULL, 'k'), has_limit(NULL, NULL), has_limit(NULL, 2), "
            "has_limit(3, NULL)"
        ).fetchone()
        assert names == ("q:mail//", "qk:mail//k", "t:/send/", "tk:/send/k", "mail//k", False,
                         True, True)  # fmt: skip


def race_migrations(database_url: str, schema: str, callers: int = 8) -> list[list[str]]:
    """``callers`` threads migrate ``schema`` at the same instant; what each applied."""
    barrier = threading.Barrier(callers)
    applied: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with dbconnect.connect(database_url) as conn:
                barrier.wait()
                applied.append(migrate(conn, schema))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [], [repr(e.__cause__) for e in errors]
    return applied


@pytest.mark.needs_owner  # migrates a fresh schema
def test_concurrent_migrations_apply_once(database_url: str, schema: str) -> None:
    applied = race_migrations(database_url, schema)
    # every numbered migration plus the functions file, applied by exactly one caller
    assert sorted(len(a) for a in applied) == [0] * 7 + [len(sqlfiles.migration_names()) + 1]


@pytest.mark.needs_owner  # migrates a fresh schema
def test_concurrent_migrations_through_a_warm_pool_apply_once(
    database_url: str, new_schema: Callable[[str], str]
) -> None:
    # Given a pooler (when the suite runs through one) holding ~30 idle server
    # connections that have already served migrations of other schemas: a server
    # connection that looked a schema up before another one created it must not
    # answer from its stale catalog cache (issue 9: 7 of 8 callers failed on
    # pg_namespace's unique index, only once the pool was warm).
    def hold_a_transaction() -> None:
        with dbconnect.connect(database_url) as conn, conn.transaction():
            conn.execute("SELECT pg_sleep(0.3)")

    warmers = [threading.Thread(target=hold_a_transaction) for _ in range(30)]
    for t in warmers:
        t.start()
    for t in warmers:
        t.join()
    for name in [new_schema(f"w_{uuid.uuid4().hex[:12]}") for _ in range(4)]:
        # When 8 callers race to create and migrate a fresh schema, round after round
        applied = race_migrations(database_url, name)
        # Then each round's work was done once, by one caller, and nobody failed
        assert sorted(len(a) for a in applied) == [0] * 7 + [len(sqlfiles.migration_names()) + 1]


def test_claim_stays_on_its_partial_index_with_a_million_finished_rows(
    database_url: str, schema: str
) -> None:
    # Plans and statistics are the database's own business: straight to it.
    with psycopg.connect(direct_url(database_url), autocommit=True) as conn:
        migrate(conn, schema)
        conn.execute(f"SET search_path = {schema}")
        # Given a million finished tasks, thousands delayed or running, and a little due work
        conn.execute("""
            INSERT INTO finished_tasks (id, task_name, queue, payload, priority, state, attempt,
                                        errors, crashes, created_at, finished_at)
            SELECT -g, 'noop', 'default', '{}', 0, 'succeeded', 1, 0, 0, now(), now()
            FROM generate_series(1, 1000000) g""")
        conn.execute("""
            INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes, run_after,
                               state)
            SELECT 'noop', 'default', '{}', 5, 3, now() + interval '1 hour', 'scheduled'
            FROM generate_series(1, 20000)""")
        conn.execute("""
            INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes, state,
                               lease_owner, lease_expires_at, started_at)
            SELECT 'noop', 'default', '{}', 5, 3, 'running', gen_random_uuid(),
                   now() + interval '1 hour', now()
            FROM generate_series(1, 5000)""")
        conn.execute("""
            INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes)
            SELECT 'noop', 'default', '{}', 5, 3 FROM generate_series(1, 200)""")
        # (no ANALYZE: the claim must stay on its index even with stale statistics)

        def scans() -> tuple[int, int]:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            idx = conn.execute(
                "SELECT idx_scan FROM pg_stat_user_indexes WHERE schemaname = %s "
                "AND indexrelname = 'tasks_claim_idx'",
                (schema,),
            ).fetchone()
            seq = conn.execute(
                "SELECT seq_scan FROM pg_stat_user_tables WHERE schemaname = %s "
                "AND relname = 'tasks'",
                (schema,),
            ).fetchone()
            assert idx is not None and seq is not None
            return int(idx[0]), int(seq[0])

        claim = sqlfiles.query("task_claim", schema)
        params = {
            "worker": uuid.uuid4(),
            "queues": ["default"],
            "names": ["noop"],
            "limit": 10,
            "lease": "30 seconds",
            "start": 0,
        }
        for _ in range(8):  # past plpgsql's switch to a generic plan
            conn.execute("SELECT pg_stat_force_next_flush()")
            idx_before, seq_before = scans()
            # When workers claim
            rows = conn.execute(claim, params).fetchall()
            conn.execute("SELECT pg_stat_force_next_flush()")
            idx_after, seq_after = scans()
            # Then each claim is served by the partial claim index, never a table scan
            assert len(rows) == 10
            assert idx_after > idx_before
            assert seq_after == seq_before

        # And the plan of the claim's candidate query, taken from the function itself, is an
        # index scan on tasks_claim_idx
        body, config = conn.execute(
            "SELECT prosrc, proconfig FROM pg_proc WHERE proname = 'claim' AND "
            "pronamespace = %s::regnamespace",
            (schema,),
        ).fetchone()
        for setting in config or []:  # plan it under the function's own settings
            name, value = setting.split("=", 1)
            conn.execute(f"SET {name} = {value}")
        assert "enable_sort=off" in (config or [])
        # Its plan is generic (planned once per session), and a generic plan's cost grows
        # with the backlog: without JIT off, every claim of a deep one compiled code first
        assert {"plan_cache_mode=force_generic_plan", "jit=off"} <= set(config or [])
        unlimited = re.findall(r"SELECT p\.id FROM .*?SKIP LOCKED", body, re.S)[0]
        candidate = (
            unlimited.replace("v_queue", "'default'")
            .replace("v_free", "ARRAY['noop']")
            .replace("LIMIT v_share", "LIMIT 10")
        )
        assert "'default'" in candidate and "LIMIT 10" in candidate, candidate
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + candidate).fetchall())
        assert "tasks_claim_idx" in plan, plan
        assert "Seq Scan" not in plan, plan


# -- least privilege: the roles docs/deployment.md describes ---------------------------
# These make their own roles (which needs a superuser, so a role tier skips them: it
# runs the whole suite as such roles instead).


@pytest.fixture
def plain_roles(admin_url: str) -> Iterator[privilege.Roles]:
    """An owner role and an application role, neither a superuser; no schema yet."""
    made = privilege.Roles(admin_url, "owner")
    yield made
    made.drop()


def schema_exists(admin_url: str, schema: str) -> bool:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,))
        return row.fetchone() == (1,)


@pytest.mark.needs_superuser
def test_the_owner_of_a_schema_made_for_it_migrates_without_create_on_the_database(
    admin_url: str, schema: str, plain_roles: privilege.Roles
) -> None:
    # Given a schema made for a role that may not create schemas in the database
    plain_roles.make_schema(schema)
    # When 8 processes of that role migrate it at once
    applied = race_migrations(plain_roles.owner_url, schema)
    # Then one applied every migration, nobody failed, and the role owns what they made
    assert sorted(len(a) for a in applied) == [0] * 7 + [len(sqlfiles.migration_names()) + 1]
    with psycopg.connect(admin_url) as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class "
            "WHERE relnamespace = %s::regnamespace",
            (schema,),
        ).fetchall()
    assert owners == [(plain_roles.owner,)]


@pytest.mark.needs_superuser
def test_an_owner_with_create_on_the_database_makes_the_schema_itself(
    admin_url: str, schema: str, plain_roles: privilege.Roles
) -> None:
    # Given no schema, and a role granted CREATE on the database
    plain_roles.grant_database()
    # When it migrates, Then it makes the schema and applies every migration
    with dbconnect.connect(plain_roles.owner_url) as conn:
        assert len(migrate(conn, schema)) == len(sqlfiles.migration_names()) + 1
    assert schema_exists(admin_url, schema)


@pytest.mark.needs_superuser
def test_a_role_that_may_not_create_the_schema_is_told_the_two_grants(
    admin_url: str, schema: str, plain_roles: privilege.Roles
) -> None:
    # Given no schema, and a role without CREATE on the database
    # When it migrates
    with dbconnect.connect(plain_roles.owner_url) as conn, pytest.raises(DatabaseError) as caught:
        migrate(conn, schema)
    # Then one line names what is missing and the two ways to give it, and nothing exists
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cannot migrate schema '{schema}': permission denied for database")
    assert f'CREATE SCHEMA "{schema}" AUTHORIZATION "{plain_roles.owner}"' in message
    assert f'TO "{plain_roles.owner}"' in message and "GRANT CREATE ON DATABASE" in message
    assert "another application" not in message
    assert not schema_exists(admin_url, schema)


@pytest.mark.needs_superuser
def test_an_application_role_finding_a_migration_pending_is_told_who_must_migrate(
    admin_url: str, schema: str, plain_roles: privilege.Roles
) -> None:
    # Given a schema made for the owner and the application grants, not yet migrated
    plain_roles.make_schema(schema)
    plain_roles.grant_app(schema)
    # When a process running as the application role starts (and migrates)
    with dbconnect.connect(plain_roles.app_url) as conn, pytest.raises(DatabaseError) as caught:
        migrate(conn, schema)
    # Then it is told to migrate as the owner, and nothing was made in the schema
    message = str(caught.value)
    assert "\n" not in message
    assert f"the schema belongs to role {plain_roles.owner}" in message, message
    assert f"run `tenure db migrate --schema {schema}` as {plain_roles.owner} first" in message
    with psycopg.connect(admin_url) as conn:
        made = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relnamespace = %s::regnamespace", (schema,)
        ).fetchone()
    assert made == (0,)


@pytest.mark.needs_superuser
@pytest.mark.acceptance
def test_the_documented_grants_cover_what_later_migrations_create(
    schema: str, plain_roles: privilege.Roles, workers: Any
) -> None:
    # Given the application grants of docs/deployment.md given before anything exists,
    # so that only their default privileges can cover what the migrations then make
    plain_roles.make_schema(schema)
    plain_roles.grant_app(schema)
    with dbconnect.connect(plain_roles.owner_url) as conn:
        assert migrate(conn, schema)
    # When the application role sends tasks and runs them in a real worker
    reg = Registry(plain_roles.app_url, schema=schema)

    @reg.task(name="tests.apps.fleet.sleepy", queue="work")
    def sleepy(payload: dict[str, Any]) -> float: ...

    try:
        handles = [sleepy.send({"s": 0}) for _ in range(3)]
        w = workers("--queues", "work", "--lease", "2s", dsn=plain_roles.app_url)
        # Then they succeed
        assert [h.result(timeout=30) for h in handles] == [0.0] * 3
    finally:
        reg.client.close()
    assert "permission denied" not in w.log()
    # And a table and a function a later release's migration adds are the role's to use
    with dbconnect.connect(plain_roles.owner_url) as conn:
        conn.execute(f'CREATE TABLE "{schema}".later (id bigserial PRIMARY KEY, note text)')
        conn.execute(
            f'CREATE FUNCTION "{schema}".later_count() RETURNS bigint LANGUAGE sql '
            f'AS $$ SELECT count(*) FROM "{schema}".later $$'
        )
    with dbconnect.connect(plain_roles.app_url) as conn:
        conn.execute(f'INSERT INTO "{schema}".later (note) VALUES (%s)', ("x",))
        conn.execute(f'UPDATE "{schema}".later SET note = %s', ("y",))
        assert conn.execute(f'SELECT "{schema}".later_count()').fetchone() == (1,)
        conn.execute(f'DELETE FROM "{schema}".later')


@pytest.fixture
def app_schema(schema: str, plain_roles: privilege.Roles) -> str:
    """``schema`` made for the owner, migrated by it, with the application grants."""
    plain_roles.make_schema(schema)
    with dbconnect.connect(plain_roles.owner_url) as conn:
        migrate(conn, schema)
    plain_roles.grant_app(schema)
    return schema


@pytest.mark.needs_superuser
def test_an_application_role_hears_of_unknown_tasks_in_a_deep_backlog(
    app_schema: str, plain_roles: privilege.Roles
) -> None:
    # Given a hot table past 16 MB with fresh statistics, which PostgreSQL shows its
    # owner only, holding queued tasks of a name no worker registers
    with dbconnect.connect(plain_roles.owner_url) as owner:
        owner.execute(f"SET search_path = {app_schema}")
        fill_deep_backlog(owner)
        params = {"queues": ["work"], "names": ["known"]}
        assert owner.execute(sqlfiles.query("tasks_unknown", app_schema), params).fetchall() == [
            ("ghost",)
        ]
    # When a worker running as the application role checks for unknown names
    with dbconnect.connect(plain_roles.app_url) as app:
        stats = app.execute(
            "SELECT count(*) FROM pg_stats_ext WHERE schemaname = %s", (app_schema,)
        ).fetchone()
        found = app.execute(sqlfiles.query("tasks_unknown", app_schema), params).fetchall()
    # Then it names them too, though the statistics are hidden from it
    assert stats == (0,)
    assert found == [("ghost",)]


@pytest.mark.needs_superuser
def test_the_vacuumer_of_an_application_role_says_once_that_it_cannot_vacuum(
    app_schema: str, plain_roles: privilege.Roles, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a hot table that a burn-down left with 12,000 dead rows
    with dbconnect.connect(plain_roles.owner_url) as owner:
        owner.execute(f"SET search_path = {app_schema}")
        owner.execute(
            "INSERT INTO tasks (task_name, queue, payload, max_attempts, max_crashes) "
            "SELECT 'burn', 'default', '{}', 1, 1 FROM generate_series(1, 12000)"
        )
        owner.execute("DELETE FROM tasks")
        owner.execute("SELECT pg_stat_force_next_flush()")

        def dead() -> int:
            owner.execute("SELECT pg_stat_clear_snapshot()")
            row = owner.execute(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'tasks'::regclass"
            ).fetchone()
            return int(row[0]) if row else 0

        eventually(lambda: dead() >= 12_000, timeout=10, what="statistics see the dead rows")

    async def passes() -> list[VacuumResult]:
        store = AsyncStore(plain_roles.app_url, app_schema, "vacuum-test")
        notices: list[str] = []
        try:
            (await store.link.connection()).add_notice_handler(
                lambda d: notices.append(d.message_primary or "")
            )
            vacuumer = Vacuumer(store)
            results = [await vacuumer.run_once() for _ in range(3)]
            assert notices == []
            return results
        finally:
            await store.close()

    # When a worker running as the application role makes three passes
    with caplog.at_level(logging.INFO, logger="tenure._maintenance.vacuumer"):
        results = asyncio.run(passes())
    # Then none vacuums, and it says why once
    assert [(r.vacuumed, r.permitted) for r in results] == [(False, False)] * 3
    assert all(r.dead >= 12_000 for r in results)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1, said
    assert said[0].startswith(f'tasks_vacuum_skipped table="{app_schema}"."tasks"')
    assert "only its owner may vacuum it" in said[0]
