"""File primitives of the embedded server: an exclusive lock, atomic writes, directories.

Rules:
- Every read or write of the files next to the data dir, initdb, start and stop happen
  under an exclusive ``flock`` on ``<data dir>.lock``, waited for with a deadline.
- Files next to the data dir are written to a temporary name, fsynced and renamed into
  place; a writer killed before the rename leaves its temporary file, which the next
  writer (under the same lock) removes, so none pile up.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tenure.embedded.paths import ENV_DIR
from tenure.errors import EmbeddedServerError

LOCK_TIMEOUT_S = 120.0


@contextlib.contextmanager
def flock(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot open the lock file {path} ({exc.strerror}); set {ENV_DIR} to a directory "
            "you can write"
        ) from exc
    try:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"timed out after {timeout:.0f}s waiting for the lock {path} held by "
                        "another tenure process; find it with `fuser` or stop it"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``path`` through a temporary file renamed over it; the caller holds the lock.

    Every writer of ``path`` holds the same lock, so a temporary file found here was left
    by a writer killed before its rename (an exception removes its own): it is removed.
    """
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def makedirs(path: Path, mode: int) -> None:
    """Create ``path`` and missing parents with ``mode`` (umask ignored); leave others alone."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
            d.chmod(mode)


def last_line(output: str, limit: int = 300) -> str:
    """The last non-blank line of a program's output, cut to ``limit`` characters."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[:limit]
