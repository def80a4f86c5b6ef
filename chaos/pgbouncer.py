"""A PgBouncer in transaction mode on a loopback port, in front of one database.

The suite uses it when ``TENURE_TEST_POOLER=transaction`` (it then reaches PostgreSQL
only through it, with ``TENURE_POOLER=transaction`` set so tenure keeps no session
state), and ``chaos.failover --via pgbouncer`` puts it in front of a cluster's HAProxy.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgBouncer:
    """Runs pgbouncer on a loopback port, forwarding to ``upstream_dsn``."""

    def __init__(self, upstream_dsn: str) -> None:
        url = urlparse(upstream_dsn)
        self.dbname = (url.path or "/postgres").lstrip("/") or "postgres"
        self.user = url.username or "postgres"
        host = url.hostname or "127.0.0.1"
        port = url.port or 5432
        self.dir = Path(tempfile.mkdtemp(prefix="tenure-pgbouncer-"))
        self.dir.chmod(0o755)
        self.port = _free_port()
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"{self.dbname} = host={host} port={port} dbname={self.dbname}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir =\nauth_type = trust\nauth_file = {self.dir}/users.txt\n"
            "pool_mode = transaction\nmax_client_conn = 500\ndefault_pool_size = 40\n"
            "ignore_startup_parameters = extra_float_digits\n"
            # after a failed login (no primary yet in a failover) try again in 1 s,
            # not PgBouncer's default 15 s
            "server_login_retry = 1\n"
            f"logfile = {self.dir}/pgbouncer.log\npidfile = {self.dir}/pgbouncer.pid\n"
        )
        (self.dir / "users.txt").write_text(f'"{self.user}" ""\n')
        run_as = "postgres" if os.geteuid() == 0 else None  # pgbouncer refuses to run as root
        if run_as:
            entry = pwd.getpwnam(run_as)
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.proc = subprocess.Popen(
            [PGBOUNCER, str(ini)],
            user=run_as,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.dsn = f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.dbname}"
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=1, prepare_threshold=None).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    log = self.dir / "pgbouncer.log"
                    raise RuntimeError(
                        "pgbouncer did not start: "
                        + (log.read_text()[-500:] if log.exists() else "no log")
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
