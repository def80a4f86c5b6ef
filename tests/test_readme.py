"""The README's code runs as written: its "Using it" module, on a real worker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import CHILD_PYTHONPATH, ROOT

pytestmark = pytest.mark.acceptance


def readme_module() -> str:
    """The first Python block of the README's "Using it" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using it") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Using it section has a python block"
    return match.group(1)


def test_the_readme_module_runs_as_written(
    tmp_path: Path, database_url: str, schema: str, db: psycopg.Connection[Any]
) -> None:
    # Given the README's module saved where it says, in a folder on the path
    code = readme_module()
    assert code.startswith("# myapp/tasks.py\n")
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "tasks.py").write_text(code)
    env = {
        **os.environ,
        "TENURE_DATABASE_URL": database_url,
        "TENURE_SCHEMA": schema,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{CHILD_PYTHONPATH}",
    }
    # When a worker serves it and the module is run as the README runs it
    worker = subprocess.Popen(
        [sys.executable, "-m", "tenure", "worker", "myapp.tasks:reg", "--lease", "5s"],
        cwd=ROOT,
        env=env,
        stdout=(tmp_path / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        done = subprocess.run(
            [sys.executable, "-m", "myapp.tasks"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    # Then it prints the README's word count, which a worker computed
    assert done.returncode == 0, (done.stderr[-2000:], (tmp_path / "worker.log").read_text())
    words = len((ROOT / "README.md").read_text(errors="replace").split())
    assert done.stdout.strip() == f"README.md has {words} words"
    docs = len(list((ROOT / "docs").glob("*.md")))
    row = db.execute("SELECT count(*) FROM tasks WHERE schedule IS NULL").fetchone()
    finished = db.execute(
        "SELECT count(*) FROM finished_tasks f"
        " WHERE NOT EXISTS (SELECT 1 FROM schedule_ticks st WHERE st.task_id = f.id)"
    ).fetchone()
    assert row is not None and finished is not None
    assert row[0] + finished[0] == 1 + docs
    # And the worker published the module's nightly schedule, with its next tick at
    # 02:00 in Paris
    (schedule,) = db.execute("SELECT name, cron, timezone FROM schedules").fetchall()
    assert schedule == ("myapp.tasks.count_words", "0 2 * * *", "Europe/Paris")


def test_a_task_defined_in_a_script_warns_that_no_worker_knows_its_name(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import warnings\n"
        "from tenure import Registry\n"
        "reg = Registry('postgresql://127.0.0.1:1/none')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    @reg.task\n"
        "    def job(p: dict) -> None: ...\n"
        "print(job.name, '|', caught[0].message if caught else 'no warning')\n"
    )
    env = {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    name, _, warning = out.stdout.strip().partition(" | ")
    assert name == "__main__.job", out.stderr
    assert "a name no worker importing a module knows" in warning
