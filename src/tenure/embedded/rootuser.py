"""Running the embedded server for root: its system user and the permissions it needs.

Rules:
- PostgreSQL refuses to run as root. As root, the server runs as the system user
  ``tenure-pg`` (created on first use, under a lock: ``useradd`` races with itself) from
  the root-owned, world-readable copy of the binaries; only the data dir is opened to it.
- No permission of any other directory is changed: one the server user cannot traverse is
  an error, and so is a socket directory that is not private to its owner.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import stat
import subprocess
import time
from pathlib import Path

from tenure.embedded.files import flock, last_line, makedirs
from tenure.embedded.paths import ENV_DIR, PG_MAJOR, ROOT_BASE
from tenure.errors import EmbeddedServerError

SYSTEM_USER = "tenure-pg"


def _nologin_shell() -> str:
    for shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false"):
        if os.path.exists(shell):
            return shell
    return "/bin/false"


def _lookup_system_user() -> tuple[int, int] | None:
    try:
        pw = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def ensure_system_user() -> tuple[int, int]:
    """(uid, gid) of :data:`SYSTEM_USER`, creating it if missing (safe under races).

    ``useradd`` checks that the name is free *before* taking its own lock, so concurrent
    calls all "succeed", each rewriting the entry with a new uid: a process that looked the
    user up in between would run PostgreSQL as a uid that no longer exists. Creation is
    therefore serialized under our own lock, re-checking inside it.
    """
    found = _lookup_system_user()
    if found is not None:
        return found
    try:
        makedirs(ROOT_BASE, 0o755)
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot create {ROOT_BASE} ({exc.strerror}) to set up the user '{SYSTEM_USER}' "
            "that runs PostgreSQL for root; create that user yourself or set TENURE_DATABASE_URL"
        ) from exc
    deadline = time.monotonic() + 30.0
    with flock(ROOT_BASE / ".useradd.lock"):
        while (found := _lookup_system_user()) is None:
            group_args = ["--user-group"]
            with contextlib.suppress(KeyError):
                grp.getgrnam(SYSTEM_USER)
                group_args = ["--gid", SYSTEM_USER]
            cmd = [
                "useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                "--shell", _nologin_shell(), *group_args, SYSTEM_USER,
            ]  # fmt: skip
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            except FileNotFoundError:
                raise EmbeddedServerError(
                    f"PostgreSQL cannot run as root and `useradd` is missing: create a system "
                    f"user '{SYSTEM_USER}', run tenure as a non-root user, or set "
                    "TENURE_DATABASE_URL"
                ) from None
            # 9: the name exists (lookups may lag, e.g. nscd); 1/10: passwd/group file locked
            # by another tool
            if done.returncode == 0:
                continue
            if done.returncode in (1, 9, 10) and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            raise EmbeddedServerError(
                f"could not create the system user '{SYSTEM_USER}' that runs PostgreSQL for "
                f"root ({last_line(done.stderr)}); create it yourself or set TENURE_DATABASE_URL"
            )
    return found


def check_searchable(path: Path, uid: int, gid: int) -> None:
    """Raise unless every directory from / down to ``path`` is searchable by uid/gid."""
    for d in [*reversed(path.parents), path]:
        st = d.stat()
        if (
            st.st_mode & stat.S_IXOTH
            or (st.st_uid == uid and st.st_mode & stat.S_IXUSR)
            or (st.st_gid == gid and st.st_mode & stat.S_IXGRP)
        ):
            continue
        raise EmbeddedServerError(
            f"{d} is not searchable by the user '{SYSTEM_USER}' that runs PostgreSQL for root; "
            f"set {ENV_DIR} to a directory outside it (the default is {ROOT_BASE}/pg{PG_MAJOR})"
        )


def check_private_dir(path: Path, uid: int) -> None:
    """Raise unless ``path`` is a real directory owned by ``uid`` that others cannot write."""
    st = path.lstat()
    if (
        not stat.S_ISDIR(st.st_mode)
        or st.st_uid != uid
        or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ):
        raise EmbeddedServerError(
            f"{path} is not a directory owned by uid {uid} and writable only by it; "
            f"remove it, or set {ENV_DIR} elsewhere"
        )
