"""The embedded PostgreSQL server used when no DSN is configured.

Every local tenure process shares one server per data dir: it joins at first use and
leaves at exit, and the last to leave stops it. ``tenure db start|stop|status|url`` drive
it from the command line.

>>> from tenure.embedded import ensure_embedded, stop_embedded
>>> dsn = ensure_embedded()  # doctest: +SKIP
>>> stop_embedded()          # doctest: +SKIP

One job per module, each opening with its rules; each imports only modules listed above
it, and nothing from tenure but its error tree:

- :mod:`.paths`: the data dir, the socket dir and the DSN;
- :mod:`.procfs`: whether a pid is alive and when it started, postgres processes in a dir;
- :mod:`.files`: the lock, atomic writes, directories;
- :mod:`.rootuser`: the system user that runs the server for root, permission checks;
- :mod:`.binaries`: the wheel's binaries and their one shared copy;
- :mod:`.cluster`: initdb, start and stop of one data dir's server;
- :mod:`.server`: its owners and pin, and the functions below.
"""

from tenure.embedded.paths import ENV_DIR, PG_MAJOR, PORT, embedded_data_dir, embedded_dsn
from tenure.embedded.rootuser import SYSTEM_USER
from tenure.embedded.server import (
    EmbeddedServer,
    EmbeddedStatus,
    embedded_status,
    ensure_embedded,
    stop_embedded,
)
from tenure.errors import EmbeddedServerError, EmbeddedServerInUse

__all__ = [
    "ENV_DIR",
    "PG_MAJOR",
    "PORT",
    "SYSTEM_USER",
    "EmbeddedServer",
    "EmbeddedServerError",
    "EmbeddedServerInUse",
    "EmbeddedStatus",
    "embedded_data_dir",
    "embedded_dsn",
    "embedded_status",
    "ensure_embedded",
    "stop_embedded",
]
