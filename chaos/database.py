"""The campaign's PostgreSQL: a private embedded server, or the system's cluster.

Rules:
- ``embedded`` (the default) starts a private embedded server in the campaign's temporary
  directory, so restarting it never disturbs another run; ``close()`` stops it.
- ``system`` uses a cluster managed by Debian's ``pg_ctlcluster`` (``15/main`` unless
  told otherwise), reached over loopback TCP. A restart is ``stop -m fast`` then
  ``start``. ``close()`` starts the cluster again if it is not running, whatever
  happened before — a campaign never leaves the system server down — and drops the
  campaign's schema.
- Both expose the same four things: ``dsn``, ``target`` (what a proxy forwards to),
  ``stop()`` and ``start()``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path
from typing import Protocol

import psycopg
from psycopg import sql

from chaos.netns import database_address
from tenure.embedded import EmbeddedServer

SYSTEM_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SYSTEM_CLUSTER = "15/main"


class Database(Protocol):
    dsn: str
    target: str
    label: str

    def stop(self) -> None: ...

    def start(self) -> None: ...

    def close(self, schema: str) -> None: ...


class Embedded:
    """A private embedded server in ``data_dir``."""

    label = "embedded"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server = EmbeddedServer(data_dir)
        self.dsn = self.server.join()
        self.target = str(self.server.socket_dir / ".s.PGSQL.5432")

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server = EmbeddedServer(self.data_dir)
        self.server.join()

    def close(self, schema: str) -> None:
        EmbeddedServer(self.data_dir).stop()


def system_available(cluster: str = SYSTEM_CLUSTER) -> str | None:
    """None if ``cluster`` (``VERSION/NAME``) is managed here and online, else why not."""
    if shutil.which("pg_lsclusters") is None:
        return "pg_lsclusters is not installed (Debian's postgresql-common)"
    version, _, name = cluster.partition("/")
    done = subprocess.run(
        ["pg_lsclusters", "--no-header"], capture_output=True, text=True, timeout=15
    )
    for line in done.stdout.splitlines():
        cols = line.split()
        if cols[:2] == [version, name]:
            return None if cols[3] == "online" else f"cluster {cluster} is {cols[3]}"
    return f"no cluster {cluster} in pg_lsclusters"


class System:
    """The system cluster ``VERSION/NAME``, reached at ``dsn`` over loopback TCP."""

    label = "system"

    def __init__(self, dsn: str = SYSTEM_DSN, cluster: str = SYSTEM_CLUSTER) -> None:
        reason = system_available(cluster)
        if reason is not None:
            raise RuntimeError(f"system PostgreSQL unavailable: {reason}")
        self.dsn = dsn
        self.cluster = cluster.split("/")
        self.target = database_address(dsn)

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pg_ctlcluster", *self.cluster, *args], capture_output=True, text=True, timeout=120
        )

    def running(self) -> bool:
        return self._ctl("status").returncode == 0

    def stop(self) -> None:
        done = self._ctl("stop", "-m", "fast")
        if done.returncode != 0 and self.running():
            raise RuntimeError(f"pg_ctlcluster stop failed: {done.stderr.strip()}")

    def start(self) -> None:
        done = self._ctl("start")
        if done.returncode != 0 and not self.running():
            raise RuntimeError(f"pg_ctlcluster start failed: {done.stderr.strip()}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # accepting connections, not only forked
            with contextlib.suppress(psycopg.OperationalError):
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            time.sleep(0.1)

    def close(self, schema: str) -> None:
        try:
            if not self.running():
                self.start()
        finally:
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn,
            ):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
