"""Schema versions only go forward: what a release records, what an older one leaves
alone, when it refuses, and what ``tenure db status`` says of it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tenure._db import connect as dbconnect
from tenure._db import releases, sqlfiles
from tenure._db.migrate import check_ready, migrate
from tenure.errors import SchemaTooNew
from tests import privilege
from tests.conftest import WorkerProcess, tenure_cli

NEWER = "99.0.0"  # a release that does not exist yet, as its record would say
LAST = sqlfiles.migration_names()[-1]


def pretend_newer(conn: psycopg.Connection[Any], schema: str, serves_from: str) -> str:
    """Make ``schema`` look migrated by release NEWER: one of its functions changed (the
    way a newer release would change it: a body this code does not have) and its
    record, with the functions as it left them. Returns the changed function's body."""
    body = "SELECT 'newer release'::text"
    conn.execute(
        f"CREATE FUNCTION {schema}.newer_marker() RETURNS text LANGUAGE sql AS $$ {body} $$"
    )
    conn.execute(
        f"INSERT INTO {schema}.releases (release, serves_from, functions) VALUES (%s, %s, %s)",
        (NEWER, serves_from, releases.functions_digest(conn, schema)),
    )
    return body


def function_bodies(conn: psycopg.Connection[Any], schema: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', p.prosrc "
        "FROM pg_proc p WHERE p.pronamespace = %s::regnamespace",
        (schema,),
    ).fetchall()
    return dict(rows)


def test_versions_order_pre_releases_before_the_release() -> None:
    order = [
        "0.1.0", "0.2.0.dev0", "0.2.0.dev3", "0.2.0a1.dev1", "0.2.0a1", "0.2.0b2", "0.2.0rc1",
        "0.2.0", "0.2.0.post1.dev0", "0.2.0.post1", "0.10.0",
    ]  # fmt: skip
    assert sorted(reversed(order), key=releases.version_key) == order
    assert releases.version_key("0.2.0+local.1") == releases.version_key("0.2.0")
    # a version of another shape counts as newer than any: its serves_from is obeyed
    assert releases.version_key("0.2.0-weird") > releases.version_key("99.0.0")


@pytest.mark.needs_owner  # migrates a fresh schema
def test_a_release_that_migrates_records_itself_and_the_functions_it_left(
    database_url: str, schema: str
) -> None:
    with dbconnect.connect(database_url) as conn:
        # When this release migrates a fresh schema
        migrate(conn, schema)
        # Then the schema records it, what it serves, and the functions as it left them
        found = releases.recorded(conn, schema)
        assert [(r.release, r.serves_from) for r in found] == [
            (releases.RELEASE, releases.SERVES_FROM)
        ]
        assert found[0].functions == releases.functions_digest(conn, schema)
        # And the digest is of what is installed: a changed body changes it
        conn.execute(
            f"CREATE OR REPLACE FUNCTION {schema}.queue_names(p_cap integer) RETURNS SETOF text "
            "LANGUAGE sql STABLE AS $$ SELECT 'edited'::text LIMIT p_cap $$"
        )
        assert releases.functions_digest(conn, schema) != found[0].functions


@pytest.mark.needs_owner  # migrates a fresh schema and plays a newer release
def test_an_older_release_leaves_a_newer_releases_functions_in_place_and_says_so(
    database_url: str,
    schema: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with dbconnect.connect(database_url) as conn:
        migrate(conn, schema)
        conn.commit()
        # Given a newer release migrated the schema after this one (and still serves it)
        marker = pretend_newer(conn, schema, serves_from=releases.RELEASE)
        conn.commit()
        before = function_bodies(conn, schema)
        # and this release's functions differ from what is installed (as an older
        # release's would): it would apply them, were the schema not newer
        read = sqlfiles._read

        def older(package: str, file: str) -> str:
            text = read(package, file)
            if (package, file) == ("tenure._db.functions", "10_fairness.sql"):
                return text.replace("RETURN 1.0 / coalesce(", "RETURN 1.0 / COALESCE(")
            return text

        monkeypatch.setattr(sqlfiles, "_read", older)
        sqlfiles.bind.cache_clear()
        sqlfiles.functions_sql.cache_clear()
        try:
            # When this release migrates again
            with caplog.at_level(logging.WARNING, logger="tenure._db.migrate"):
                applied = migrate(conn, schema)
            conn.commit()
        finally:
            sqlfiles.bind.cache_clear()
            sqlfiles.functions_sql.cache_clear()
        # Then it applied nothing, and every function is as the newer release left it
        assert applied == []
        assert function_bodies(conn, schema) == before
        assert marker in before["newer_marker()"]
        # And it said so, naming both releases
        said = [r.getMessage() for r in caplog.records if "schema_newer" in r.getMessage()]
        assert said and f"release={NEWER}" in said[0] and f"this={releases.RELEASE}" in said[0]
        # And the read-only check lets it run
        check_ready(conn, schema)
    # And `db status` tells the truth: the newer release's functions, and this one served
    out = tenure_cli("db", "status", "--dsn", database_url, "--schema", schema)
    assert out.returncode == 0, out.stderr
    assert f"migrated by tenure {NEWER}" in out.stdout
    assert f"functions: as tenure {NEWER} left them" in out.stdout
    assert f"this is tenure {releases.RELEASE}: served" in out.stdout


@pytest.mark.needs_owner  # migrates a fresh schema and plays a newer release
def test_a_release_the_newest_no_longer_serves_refuses_with_one_line_and_creates_nothing(
    database_url: str,
    schema: str,
    workers: Callable[..., WorkerProcess],
    db: psycopg.Connection[Any],
) -> None:
    with dbconnect.connect(database_url) as conn:
        migrate(conn, schema)
        # Given a newer release migrated the schema and serves workers of 98.0.0 on only
        pretend_newer(conn, schema, serves_from="98.0.0")
        conn.commit()
        expected = (
            f"schema {schema!r} was migrated by tenure {NEWER}, which serves workers of tenure "
            f"98.0.0 and later; this is tenure {releases.RELEASE}: upgrade it to 98.0.0 or later"
        )
        # Then migrating and the read-only check both refuse with that one line
        with pytest.raises(SchemaTooNew) as refused:
            migrate(conn, schema)
        assert str(refused.value) == expected
        conn.rollback()
        with pytest.raises(SchemaTooNew) as checked:
            check_ready(conn, schema)
        assert str(checked.value) == expected
        # And so does a migration that had something to apply, under its lock, and it
        # applies none of it
        conn.execute(f"DELETE FROM {schema}.migrations WHERE name = %s", (LAST,))
        conn.commit()
        with pytest.raises(SchemaTooNew) as locked:
            migrate(conn, schema)
        assert str(locked.value) == expected
        conn.rollback()
        row = conn.execute(f"SELECT count(*) FROM {schema}.migrations WHERE name = %s", (LAST,))
        assert row.fetchone() == (0,)
    # When a worker of this release starts on it
    w = workers("--lease", "2s")
    # Then it exits with that line, once, and has registered nothing
    assert w.wait(30) != 0
    said = [line for line in w.log().splitlines() if "worker_start_failed" in line]
    assert len(said) == 1 and expected in said[0], w.log()
    assert db.execute("SELECT count(*) FROM workers").fetchone() == (0,)
    # And `db status` says this release is not served, and what to upgrade to
    out = tenure_cli("db", "status", "--dsn", database_url, "--schema", schema)
    assert "this is tenure " + releases.RELEASE + ": not served: upgrade to 98.0.0" in out.stdout


@pytest.mark.needs_owner  # migrates a fresh schema
def test_db_status_lists_migrations_functions_and_what_the_schema_serves(
    database_url: str, schema: str, db: psycopg.Connection[Any]
) -> None:
    # Before the schema holds tenure's tables, it says so and how they are made
    out = tenure_cli("db", "status", "--dsn", database_url, "--schema", schema)
    assert out.returncode == 0, out.stderr
    made = "exists but holds no tenure tables yet" if privilege.MODE else "not created yet"
    assert f"schema {schema}: {made}" in out.stdout
    with dbconnect.connect(database_url) as conn:
        migrate(conn, schema)
    # After this release migrated it: every migration, the functions' release, the
    # oldest release served, and that this one is served
    out = tenure_cli("db", "status", "--dsn", database_url, "--schema", schema)
    names = sqlfiles.migration_names()
    assert f"schema {schema}: {len(names)} migrations applied, the last {names[-1]}" in out.stdout
    assert "pending for this release: nothing" in out.stdout
    assert f"functions: as tenure {releases.RELEASE} left them" in out.stdout
    assert f"oldest release served: {releases.SERVES_FROM}" in out.stdout
    # When a function changes behind every release's back, it says that too
    db.execute(
        f"CREATE OR REPLACE FUNCTION {schema}.queue_names(p_cap integer) RETURNS SETOF text "
        "LANGUAGE sql STABLE AS $$ SELECT 'edited'::text LIMIT p_cap $$"
    )
    out = tenure_cli("db", "status", "--dsn", database_url, "--schema", schema, "--json")
    st = json.loads(out.stdout)["schema"]
    assert st["functions_release"] is None
    assert [m["name"] for m in st["migrations"]] == names
    assert st["serves_this_release"] is True
    out = tenure_cli("db", "status", "--dsn", database_url, "--schema", schema)
    assert "functions: not as any recorded release left them" in out.stdout
    # And the next migration by this release, the newest, puts its functions back
    with dbconnect.connect(database_url) as conn:
        applied = migrate(conn, schema)
        assert len(applied) == 1 and applied[0].startswith("functions.sql@")
        assert releases.recorded(conn, schema)[-1].functions == releases.functions_digest(
            conn, schema
        )
    out = tenure_cli("db", "status", "--dsn", database_url, "--schema", schema)
    assert f"functions: as tenure {releases.RELEASE} left them" in out.stdout


@pytest.mark.needs_owner  # migrates a fresh schema
def test_a_release_that_finds_nothing_to_apply_still_records_itself(
    database_url: str, schema: str
) -> None:
    with dbconnect.connect(database_url) as conn:
        migrate(conn, schema)
        # Given the schema holds everything this release has, but no record of it (as
        # when a release adds nothing to the schema of the one before)
        conn.execute(f"DELETE FROM {schema}.releases")
        # When it migrates, it applies nothing, and records itself
        assert migrate(conn, schema) == []
        assert [r.release for r in releases.recorded(conn, schema)] == [releases.RELEASE]


def test_db_status_on_a_server_that_is_not_there_says_so_in_one_line() -> None:
    dsn = "postgresql://postgres@127.0.0.1:1/test"  # a closed local port
    out = tenure_cli("db", "status", "--dsn", dsn, "--schema", "tenure")
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "schema 'tenure'" in errors[0], out.stderr
