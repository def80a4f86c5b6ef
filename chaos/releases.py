"""The previous release, as the upgrade tests and ``chaos.upgrade`` run it beside this code.

Its source comes from this repository's history at the commit its CHANGELOG entry
names, so they need a clone with history (CI clones one); a checkout without it fails
with the command that fetches it, never skips. Its virtualenv, built once from that
source with the dependency versions pip picks for it, is kept under
``.venv-releases/<release>-<commit>``.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".venv-releases"

RELEASE = "0.2.0"
COMMIT = "3ffffd9e97948318da022565e154f2299b3cf8ed"  # CHANGELOG.md, 0.2.0


class HistoryMissing(AssertionError):
    pass


def extract(dest: Path) -> Path:
    """The previous release's files under ``dest`` (its ``src/`` is importable)."""
    try:
        tar = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", COMMIT],
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise HistoryMissing(
            f"tenure {RELEASE} (commit {COMMIT[:12]}) is not in this checkout's history: "
            f"run `git fetch --unshallow` (or clone with history) ({exc})"
        ) from None
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    return dest


def migration_names() -> list[str]:
    """The previous release's numbered migrations, from history."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-tree", "--name-only", COMMIT, "src/tenure/_db/migrations/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise HistoryMissing(
            f"tenure {RELEASE} (commit {COMMIT[:12]}) is not in this checkout's history: "
            "run `git fetch --unshallow` (or clone with history)"
        )
    names = (line.rsplit("/", 1)[-1] for line in out.stdout.splitlines())
    return sorted(n for n in names if n.endswith(".sql") and n[:4].isdigit())


@dataclass(frozen=True)
class Installed:
    """The previous release ready to run: its source tree and its virtualenv's python."""

    source: Path
    python: Path

    def env(self) -> dict[str, str]:
        """What its processes run with: its own chaos app and tenure, nothing of ours."""
        return {"PYTHONPATH": str(self.source), "PATH": f"{self.python.parent}:/usr/bin:/bin"}


def install(cache: Path = CACHE) -> Installed:
    """The previous release's source and virtualenv under ``cache``, built on first use
    (the ``.installed`` marker says a build finished)."""
    home = cache / f"{RELEASE}-{COMMIT[:12]}"
    source, env_dir = home / "src-tree", home / "venv"
    python = env_dir / "bin" / "python"
    if (home / ".installed").exists():
        return Installed(source, python)
    if home.exists():
        shutil.rmtree(home)
    extract(source)
    venv.create(env_dir, with_pip=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, str(source)], check=True, timeout=900)
    (home / ".installed").write_text(f"tenure {RELEASE} at {COMMIT}\n")
    return Installed(source, python)


MIGRATE = """
import sys, psycopg
import tenure
from tenure._db.migrate import migrate
assert tenure.__version__ == sys.argv[3], tenure.__version__
with psycopg.connect(sys.argv[1]) as conn:
    print(",".join(migrate(conn, sys.argv[2])))
"""


def migrate(inst: Installed, dsn: str, schema: str) -> list[str]:
    """Migrate ``schema`` with the previous release's own code; the names it applied."""
    out = subprocess.run(
        [str(inst.python), "-c", MIGRATE, dsn, schema, RELEASE],
        capture_output=True,
        text=True,
        timeout=120,
        env=inst.env(),
        cwd=inst.source,
    )
    if out.returncode != 0:
        raise AssertionError(f"tenure {RELEASE} could not migrate: {out.stderr[-2000:]}")
    return out.stdout.strip().split(",") if out.stdout.strip() else []
