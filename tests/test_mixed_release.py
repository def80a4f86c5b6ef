"""A fleet of two releases on one schema: the previous release's workers and this code's,
rolled forward and back under a steady stream, with this code migrating mid-run
(``chaos/upgrade.py``; ``make chaos-upgrade`` runs many rounds)."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from chaos import releases as previous
from chaos import upgrade
from tenure._db import sqlfiles


@pytest.mark.acceptance
@pytest.mark.needs_owner  # the previous release migrates a fresh schema
def test_a_fleet_of_two_releases_rolls_forward_and_back_without_losing_anything(
    database_url: str, admin_url: str, tmp_path: Path
) -> None:
    schema = f"upgrade_{uuid.uuid4().hex[:12]}"
    try:
        res = upgrade.run(
            database_url, rounds=1, workers=2, rate=40.0, logs=tmp_path, schema=schema
        )
        print(res.summary())
        r = res.report
        # Then this code migrated mid-run what the previous release lacked
        added = set(sqlfiles.migration_names()) - set(previous.migration_names())
        assert added <= set(res.migrated_mid_run), res.migrated_mid_run
        # And workers of both releases ran, each replaced by the other in turn
        assert res.started[previous.RELEASE] >= 4 and res.started[upgrade.THIS] >= 4
        assert res.senders[previous.RELEASE] >= 2 and res.senders[upgrade.THIS] >= 2
        # And every task sent was finished: nothing lost, no overlapping leases, no
        # stale outcome, no unexplained duplicate
        assert r.sent > 200 and r.finished == r.sent, res.summary()
        assert (r.lost, r.overlapping_leases, r.stale_outcomes) == (0, 0, 0), res.summary()
        assert r.violations() == [], r.violations()
        # And each worker of the previous release started after this code migrated (the
        # rollback's) found this code recorded as newer, kept its functions and said so
        said = f"schema_newer schema={schema} release={upgrade.THIS} this={previous.RELEASE}"
        old_logs = sorted(tmp_path.glob(f"worker-{previous.RELEASE}-*.log"))
        rolled_back = [p for p in old_logs if said in p.read_text(errors="replace")]
        assert len(rolled_back) == res.started[previous.RELEASE] - 2, [p.name for p in old_logs]
        # And every worker stayed up until told to stop, and then drained and exited 0
        assert res.problems == [], res.problems
        assert len(res.exits) == sum(res.started.values())
        assert all(code == 0 for _, code in res.exits), res.exits
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
