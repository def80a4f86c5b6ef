"""The expand/contract rule (docs/architecture.md, Upgrades): this release's migrations,
applied in place over the previous release's schema, only add what that release
ignores, as long as this release still serves it."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from chaos import releases as previous
from tenure._db import connect as dbconnect
from tenure._db import releases
from tenure._db.migrate import migrate
from tests.support.schema_contract import Catalog, breaking_changes, read_catalog


@pytest.fixture(scope="module")
def previous_release() -> previous.Installed:
    return previous.install()


@pytest.fixture
def upgraded(
    database_url: str, schema: str, previous_release: previous.Installed
) -> Iterator[tuple[psycopg.Connection, Catalog, Catalog]]:
    """``schema`` migrated by the previous release, then by this one: the connection
    and the catalog before and after."""
    applied = previous.migrate(previous_release, database_url, schema)
    assert applied and applied[0] == "0001_init.sql", applied
    with dbconnect.connect(database_url) as conn:
        before = read_catalog(conn, schema)
        migrate(conn, schema)
        conn.commit()
        # this release recorded itself, the newest, over the schema the previous one
        # made (which recorded itself too from 0.2.0 on)
        recorded = [r.release for r in releases.recorded(conn, schema)]
        assert recorded[-1] == releases.RELEASE, recorded
        assert set(recorded) <= {previous.RELEASE, releases.RELEASE}, recorded
        yield conn, before, read_catalog(conn, schema)


@pytest.mark.needs_owner  # migrates a fresh schema, twice
def test_this_release_only_expands_the_schema_the_previous_release_runs_on(
    upgraded: tuple[psycopg.Connection, Catalog, Catalog],
) -> None:
    _conn, before, after = upgraded
    # Given the previous release is still served by this one
    assert releases.version_key(previous.RELEASE) >= releases.version_key(releases.SERVES_FROM)
    # Then nothing it uses is gone or changed, and nothing new trips its writes
    broken = breaking_changes(before, after)
    assert not broken, (
        f"this release's migrations break tenure {previous.RELEASE}, which it still serves "
        f"(SERVES_FROM = {releases.SERVES_FROM!r}); expand now, contract in a later release:\n  "
        + "\n  ".join(broken)
    )
    # And the previous release's tables and functions are all still there (the check
    # compared something)
    assert before.tables and before.functions
    assert before.tables <= after.tables and set(before.functions) <= set(after.functions)


@pytest.mark.needs_owner  # migrates a fresh schema, twice, then breaks it
def test_the_contract_check_names_a_dropped_column_the_previous_release_reads(
    upgraded: tuple[psycopg.Connection, Catalog, Catalog], schema: str
) -> None:
    conn, before, _after = upgraded
    # When a migration drops a column the previous release reads, changes a function's
    # body in place, adds a NOT NULL column its inserts leave out, overloads a function
    # it calls and adds a unique index over its columns
    conn.execute(f"ALTER TABLE {schema}.tasks DROP COLUMN priority")
    conn.execute(
        f"CREATE OR REPLACE FUNCTION {schema}.queue_names(p_cap integer) RETURNS SETOF text "
        "LANGUAGE sql STABLE AS $$ SELECT 'edited'::text LIMIT p_cap $$"
    )
    conn.execute(f"ALTER TABLE {schema}.workers ADD COLUMN zone text NOT NULL DEFAULT 'a'")
    conn.execute(f"ALTER TABLE {schema}.workers ALTER COLUMN zone DROP DEFAULT")
    conn.execute(
        f"CREATE FUNCTION {schema}.queue_names(p_cap integer, p_more boolean) RETURNS SETOF "
        "text LANGUAGE sql STABLE AS $$ SELECT 'more'::text $$"
    )
    conn.execute(f"CREATE UNIQUE INDEX workers_host_pid ON {schema}.workers (host, pid)")
    # (and adds what it may: a nullable column with a unique constraint of its own)
    conn.execute(f"ALTER TABLE {schema}.workers ADD COLUMN rack text UNIQUE")
    conn.commit()
    broken = breaking_changes(before, read_catalog(conn, schema))
    # Then the check names each of them
    assert "column tasks.priority is gone" in broken
    assert any(
        line.startswith("function queue_names(p_cap integer) changed its") for line in broken
    )
    assert any(line.startswith("new column workers.zone is NOT NULL") for line in broken)
    assert any("is a new overload of queue_names" in line for line in broken)
    assert any(line.startswith("new unique index workers_host_pid") for line in broken)
    # And nothing else: the allowed addition is not among them
    assert len(broken) == 5 and not any("rack" in line for line in broken), broken
