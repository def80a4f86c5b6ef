"""Where the embedded server lives: its data dir, its socket and its DSN.

Rules:
- One server per data dir: ``TENURE_EMBEDDED_DIR``, else ``/var/lib/tenure/pg18`` for root,
  else ``$XDG_DATA_HOME/tenure/pg18``. The lock, owners and log files sit next to it
  (``<data dir>.lock``, ``.owners``, ``.log``).
- It listens only on a unix socket (in the data dir, or in a short per-user dir under /tmp
  when that path would exceed the 107-byte limit), never on TCP, so it cannot collide
  with a system PostgreSQL. The DSN is a pure function of the data dir.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import quote

ENV_DIR = "TENURE_EMBEDDED_DIR"
PG_MAJOR = 18
PORT = 5432  # only names the socket file; nothing listens on TCP
DATABASE = "postgres"
ROLE = "postgres"
ROOT_BASE = Path("/var/lib/tenure")
SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


def embedded_data_dir() -> Path:
    """The data dir: ``TENURE_EMBEDDED_DIR``, else a per-user default (absolute, resolved)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser().resolve()
    if os.geteuid() == 0:
        # Not under /root (the server user could not reach it) and not under /var/tmp
        # (systemd-tmpfiles ages files out of it after 30 days).
        return ROOT_BASE / f"pg{PG_MAJOR}"
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return (base / "tenure" / f"pg{PG_MAJOR}").resolve()


def resolve(data_dir: Path | str | None) -> Path:
    """``data_dir`` made absolute, or the default data dir when None."""
    return embedded_data_dir() if data_dir is None else Path(data_dir).expanduser().resolve()


def beside(data_dir: Path, suffix: str) -> Path:
    """The file next to the data dir named ``<data dir name><suffix>`` (``.lock``, ...)."""
    return data_dir.with_name(f"{data_dir.name}{suffix}")


def socket_dir(data_dir: Path) -> Path:
    """The directory of the server's socket: the data dir, unless that path is too long."""
    socket = data_dir / f".s.PGSQL.{PORT}"
    if len(os.fsencode(socket)) <= SOCKET_PATH_MAX:
        return data_dir
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    return Path(f"/tmp/tenure-{os.geteuid()}") / digest


def embedded_dsn(data_dir: Path | None = None) -> str:
    """The libpq DSN of the embedded server for ``data_dir`` (no server is started)."""
    host = quote(str(socket_dir(resolve(data_dir))), safe="/")
    return f"postgresql://{ROLE}@/{DATABASE}?host={host}&port={PORT}"
