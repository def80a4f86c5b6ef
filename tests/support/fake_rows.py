"""The fake store's tables, and the errors its statements raise when a test says so."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import psycopg
from psycopg import errors as pgerrors

from tenure.errors import DatabaseError


def lost_connection(statement: str = "statement") -> DatabaseError:
    """What a statement raises when the connection drops: transient, connection lost."""
    cause = psycopg.OperationalError("server closed the connection unexpectedly")
    error = DatabaseError(f"{statement}: server closed the connection unexpectedly")
    error.__cause__ = cause
    return error


def refused(statement: str = "statement", sqlstate: str = "22P05") -> DatabaseError:
    """What a statement the server refuses for good raises (default: untranslatable
    character, as for a NUL in a text)."""
    cause = pgerrors.lookup(sqlstate)("unsupported Unicode escape sequence")
    error = DatabaseError(f"{statement}: unsupported Unicode escape sequence")
    error.__cause__ = cause
    return error


@dataclass
class Task:
    id: int
    task_name: str
    queue: str
    payload: str = "{}"
    state: str = "queued"  # scheduled | queued | running | succeeded | failed | cancelled | ...
    attempt: int = 0
    errors: int = 0
    crashes: int = 0
    max_attempts: int = 5
    max_crashes: int = 3
    lease_owner: UUID | None = None
    lease_expires_at: float | None = None
    started_at: float | None = None
    run_after: float = 0.0
    cancel_requested: bool = False
    last_error: str | None = None
    result: str | None = None


@dataclass
class Attempt:
    task_id: int
    attempt: int
    worker: UUID | None
    outcome: str
    error: str | None = None


@dataclass
class WorkerRow:
    id: UUID
    queues: tuple[str, ...]
    concurrency: int
    state: str = "active"
    held: int = 0
    running: int = 0
    heartbeat_at: float = 0.0
    drain_requested: bool = False
    outcomes_pending: int = 0
