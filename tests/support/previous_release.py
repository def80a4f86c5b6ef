"""The previous release, as the upgrade tests run it beside this code.

Its source comes from this repository's history at the commit its CHANGELOG entry
names, so the tests need a clone with history (CI clones one); a checkout without it
fails with the command that fetches it, never skips.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import venv
from pathlib import Path

from tests.conftest import ROOT

RELEASE = "0.1.0"
COMMIT = "40976cc375476a9674aef47f067dfdd1ed9d551f"  # CHANGELOG.md, 0.1.0


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


def run_python(source: Path, code: str, *args: str, python: str = sys.executable) -> str:
    """Run ``code`` with the previous release's ``src`` first on the path; its stdout."""
    out = subprocess.run(
        [python, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(source / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, f"tenure {RELEASE} failed: {out.stderr[-2000:]}"
    return out.stdout


MIGRATE = """
import sys, psycopg
import tenure
from tenure._db.migrate import migrate
assert tenure.__file__.startswith(sys.argv[3]), tenure.__file__
with psycopg.connect(sys.argv[1]) as conn:
    print(",".join(migrate(conn, sys.argv[2])))
"""


def migrate(source: Path, dsn: str, schema: str) -> list[str]:
    """Migrate ``schema`` with the previous release's own code; the names it applied."""
    out = run_python(source, MIGRATE, dsn, schema, str(source)).strip()
    return out.split(",") if out else []


def virtualenv(source: Path, dest: Path) -> Path:
    """A virtualenv of the previous release's own (installed from its source, with the
    dependency versions pip picks for it today); its python."""
    venv.create(dest, with_pip=True)
    python = dest / "bin" / "python"
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(source),
        ],
        check=True,
        timeout=900,
    )
    return python
