"""Connections: where the DSN comes from, how sessions are set up, transient retries.

Rules:
- The DSN is the one given, else ``TENURE_DATABASE_URL``, else the embedded server.
- Every session sets ``idle_in_transaction_session_timeout`` and TCP keepalives, so a
  worker cut off in the middle of a transaction cannot hold row locks for long.
- A dead server or a cut link is noticed within :data:`DEAD_PEER_S` seconds, whether
  the connection is idle, waiting for an answer or sending (TCP keepalives and
  ``tcp_user_timeout``), so a worker whose primary vanished reconnects within one
  heartbeat; a busy server still answers keepalives, so a long statement is not cut.
- A DSN naming several hosts (``host=a,b,c``) reaches the one that accepts writes
  (``target_session_attrs=read-write`` unless the DSN says otherwise), so a reconnect
  after a failover finds the new primary.
- Whether a failure is transient (connection lost, serialization failure, deadlock, a
  server shutting down) is judged here only, by SQLSTATE (:func:`is_transient`), and
  waits between tries use one backoff (:func:`backoff_delay`): a one-off statement is
  retried by :func:`retry_sync`; the worker's loops retry their next pass.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tenure._durations import exponential
from tenure.errors import ConfigError, DatabaseError

log = logging.getLogger(__name__)

T = TypeVar("T")

ENV_DSN = "TENURE_DATABASE_URL"
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 5
# Silence on a connection for this long means the server or the link is gone: 2 s idle,
# then two unanswered keepalives 1 s apart; unacknowledged bytes give up as soon.
DEAD_PEER_S = 4

# Transience is decided by SQLSTATE, never by exception class: psycopg files
# ProgramLimitExceeded (54000), DiskFull and QueryCanceled under OperationalError too,
# and retrying those writes the same refusal forever.
TRANSIENT_CLASSES = ("08",)  # connection exceptions
# One statement's conflict with another transaction: the next statement may pass.
ROW_CONFLICTS = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
    }
)
TRANSIENT_STATES = ROW_CONFLICTS | {
    "57P01",  # admin_shutdown (a restart, a failover)
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now (starting up, in recovery)
    "53300",  # too_many_connections
    "25006",  # read_only_sql_transaction (a standby answered: failover under way)
}


def env_dsn() -> str | None:
    """``TENURE_DATABASE_URL``, or None when it is not set. Set but empty (a secret that
    did not arrive) is a :class:`ConfigError`, never a silent switch to the embedded server."""
    env = os.environ.get(ENV_DSN)
    if env is not None and not env.strip():
        raise ConfigError(
            f"{ENV_DSN} is set but empty; unset it to use the embedded server or give a DSN"
        )
    return env


def resolve_dsn(dsn: str | None = None) -> str:
    """The DSN to use: ``dsn``, else ``TENURE_DATABASE_URL``, else the embedded server."""
    if dsn is not None and not dsn.strip():
        raise ConfigError(
            f"dsn: empty; give a DSN, or leave it out to use {ENV_DSN} or the embedded server"
        )
    if dsn:
        return dsn
    env = env_dsn()
    if env:
        return env
    from tenure.embedded import ensure_embedded

    return ensure_embedded()


ENV_POOLER = "TENURE_POOLER"


def behind_transaction_pooler() -> bool:
    """True when connections go through a pooler in transaction mode (PgBouncer):
    ``TENURE_POOLER=transaction``, which ``tenure worker --poll-only`` also sets."""
    return os.environ.get(ENV_POOLER, "").lower() == "transaction"


def connect_kwargs(application_name: str = "tenure") -> dict[str, Any]:
    """Session settings shared by every connection tenure opens (a worker's links add
    theirs once connected: :meth:`tenure._store.link.Link.connection`).

    Behind a pooler in transaction mode nothing may outlive a transaction: no
    startup options (set ``idle_transaction_timeout`` in the pooler instead, and
    ``synchronous_commit`` per role if wanted) and no prepared statements.
    """
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": application_name,
        "keepalives": 1,
        "keepalives_idle": 2,
        "keepalives_interval": 1,
        "keepalives_count": DEAD_PEER_S - 2,
        "tcp_user_timeout": DEAD_PEER_S * 1000,
    }
    if behind_transaction_pooler():
        kwargs["prepare_threshold"] = None
        return kwargs
    kwargs["options"] = f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
    return kwargs


def several_hosts(dsn: str) -> bool:
    """Whether ``dsn`` names more than one server (``host=a,b`` or ``postgresql://a,b/``)."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return False  # connecting says what is wrong with it
    hosts = str(info.get("host") or info.get("hostaddr") or "")
    return "," in hosts


def session_target(dsn: str) -> dict[str, Any]:
    """``target_session_attrs=read-write`` for a DSN of several hosts that sets none:
    tenure writes on every connection, so only the primary will do."""
    if several_hosts(dsn) and "target_session_attrs" not in conninfo_to_dict(dsn):
        return {"target_session_attrs": "read-write"}
    return {}


def describe(exc: BaseException) -> str:
    """One line naming what went wrong with the database."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first


def _psycopg_error(exc: BaseException) -> psycopg.Error | None:
    """The database's error ``exc`` is, or a :class:`DatabaseError` wraps."""
    if isinstance(exc, DatabaseError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc if isinstance(exc, psycopg.Error) else None


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same statement again later may succeed: a lost or refused
    connection (no SQLSTATE, or class 08), a serialization failure or deadlock, a
    server shutting down or starting up. A :class:`DatabaseError` is judged by its
    cause."""
    err = _psycopg_error(exc)
    if err is None:
        return False
    state = err.sqlstate
    if state is None:  # raised by the client: the connection broke or never opened
        return isinstance(err, psycopg.OperationalError | psycopg.InterfaceError)
    return state.startswith(TRANSIENT_CLASSES) or state in TRANSIENT_STATES


def connection_lost(exc: BaseException) -> bool:
    """Whether a transient failure is the connection's or the server's (every
    statement fails alike until it is back), not one statement's conflict."""
    err = _psycopg_error(exc)
    return err is not None and is_transient(err) and err.sqlstate not in ROW_CONFLICTS


def connect(dsn: str, application_name: str = "tenure") -> psycopg.Connection[Any]:
    """Open a synchronous connection, raising :class:`DatabaseError` with one clear line."""
    try:
        return psycopg.Connection.connect(
            dsn, **connect_kwargs(application_name), **session_target(dsn)
        )
    except psycopg.Error as exc:
        raise DatabaseError(
            f"cannot connect to PostgreSQL ({describe(exc)}); check the DSN or {ENV_DSN}"
        ) from exc


async def aconnect(dsn: str, application_name: str = "tenure") -> psycopg.AsyncConnection[Any]:
    """Open an asyncio connection, raising :class:`DatabaseError` with one clear line."""
    try:
        return await psycopg.AsyncConnection.connect(
            dsn, **connect_kwargs(application_name), **session_target(dsn)
        )
    except psycopg.Error as exc:
        raise DatabaseError(
            f"cannot connect to PostgreSQL ({describe(exc)}); check the DSN or {ENV_DSN}"
        ) from exc


def backoff_delay(failures: int, *, base: float = 0.1, cap: float = 10.0) -> float:
    """The backoff curve with full jitter for the ``failures``-th consecutive failure."""
    return random.uniform(0, exponential(max(1, failures), base=base, cap=cap))


def retry_sync(fn: Callable[[], T], *, attempts: int = 5, what: str = "statement") -> T:
    """Run ``fn``, retrying transient database failures with backoff."""
    for failure in range(1, attempts + 1):
        try:
            return fn()
        except psycopg.Error as exc:
            if not is_transient(exc):
                raise
            if failure == attempts:
                raise DatabaseError(f"{what} failed: {describe(exc)}") from exc
            log.debug("transient failure in %s (%s); retrying", what, describe(exc))
            time.sleep(backoff_delay(failure))
    raise AssertionError("unreachable")
