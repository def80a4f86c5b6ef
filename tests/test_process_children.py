"""Task processes end with their worker: a SIGKILLed worker leaves no task process
running, so no attempt's side effect happens after its lease expired."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tenure import Registry
from tenure._worker.lineage import die_with_parent
from tenure.handle import TaskHandle
from tenure.registry import Task
from tests.conftest import ROOT, eventually

pytestmark = pytest.mark.acceptance

SLEEP = 4.0  # how long each task sleeps before its side effect
APP = "tests.apps.orphans:reg"
# Workers import tenure from this checkout (an editable install may point elsewhere).
THIS_CHECKOUT = ("env", f"PYTHONPATH={ROOT / 'src'}{os.pathsep}{ROOT}")


def still_alive(procs: list[psutil.Process]) -> list[int]:
    """The pids of ``procs`` still running (a zombie has ended; a reused pid is not it)."""
    alive = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
    return alive


@pytest.fixture
def sleeper(registry: Registry) -> Task[Any, Any]:
    """The app's task, sent through this test's registry: same name, same options."""
    from tests.apps.orphans import sleeps_then_marks

    return Task(registry, sleeps_then_marks.fn, sleeps_then_marks.options)


def send_sleepers(sleeper: Task[Any, Any], marks: Path, count: int) -> list[TaskHandle]:
    return [sleeper.send({"tag": f"t{i}", "dir": str(marks), "s": SLEEP}) for i in range(count)]


def started_pids(marks: Path, count: int) -> dict[str, int]:
    """Wait until ``count`` first attempts run their function: tag -> task process pid."""
    eventually(
        lambda: len(list(marks.glob("started-*-1"))) == count, timeout=60, what="tasks started"
    )
    return {p.name.split("-")[1]: int(p.read_text()) for p in marks.glob("started-*-1")}


def wait_past_the_sleeps(marks: Path) -> None:
    """Sleep until every first attempt would have written its side effect."""
    began = max(p.stat().st_mtime for p in marks.glob("started-*-1"))
    time.sleep(max(0.0, began + SLEEP + 1.5 - time.time()))


@pytest.mark.parametrize("supervised", [False, True], ids=["worker", "under-a-supervisor"])
def test_a_sigkilled_worker_leaves_no_task_process_running(
    sleeper: Task[Any, Any], workers: Any, tmp_path: Path, supervised: bool
) -> None:
    # Given a worker (alone, or one of two under a supervisor) whose task processes are
    # in the middle of their tasks
    marks = tmp_path / "marks"
    marks.mkdir()
    send_sleepers(sleeper, marks, 4)
    # Every task in a task process at once, whatever the cores (--process-slots)
    args = (
        ("--concurrency", "2", "--process-slots", "2", "--processes", "2")
        if supervised
        else ("--concurrency", "4", "--process-slots", "4")
    )
    w = workers("--lease", "2s", "--prefetch", "0", *args, app=APP, prefix=THIS_CHECKOUT)
    pids = started_pids(marks, 4)
    victim = psutil.Process(pids["t0"]).ppid() if supervised else w.pid
    tree = psutil.Process(victim).children(recursive=True)
    victims_tasks = {tag for tag, pid in pids.items() if pid in {p.pid for p in tree}}
    assert "t0" in victims_tasks and len(victims_tasks) == (2 if supervised else 4)
    assert not supervised or victim != w.pid
    # When the worker is SIGKILLed
    os.kill(victim, signal.SIGKILL)
    # Then within a second no process it started is alive
    eventually(
        lambda: not still_alive(tree),
        timeout=1.0,
        interval=0.02,
        what=f"every process below worker {victim} ended: {sorted(p.pid for p in tree)}",
    )
    # And no first attempt of its tasks writes its side effect, nor complains of a
    # broken pipe, once its sleep is over
    wait_past_the_sleeps(marks)
    assert [t for t in sorted(victims_tasks) if (marks / f"done-{t}-1").exists()] == []
    assert "BrokenPipeError" not in w.log()


def test_a_sigkilled_supervisor_leaves_nothing_running_and_nothing_run_twice(
    sleeper: Task[Any, Any], workers: Any, tmp_path: Path
) -> None:
    # Given a supervisor whose two workers' task processes are in the middle of their tasks
    marks = tmp_path / "marks"
    marks.mkdir()
    handles = send_sleepers(sleeper, marks, 4)
    sup = workers(
        "--lease", "2s", "--prefetch", "0", "--concurrency", "2", "--process-slots", "2",
        "--processes", "2", "--drain-timeout", "30s", app=APP, prefix=THIS_CHECKOUT,
    )  # fmt: skip
    started_pids(marks, 4)
    tree = psutil.Process(sup.pid).children(recursive=True)
    # When the supervisor is SIGKILLed
    sup.kill()
    # Then its workers drain: every task finishes on its first attempt, its side effect
    # written once, and no process the supervisor started is left
    eventually(lambda: not still_alive(tree), timeout=SLEEP + 30, what="the workers end")
    for h in handles:
        info = h.info()
        assert (info.state, info.attempt) == ("succeeded", 1), sup.log()
    done = sorted(p.name for p in marks.glob("done-*"))
    assert done == [f"done-t{i}-1" for i in range(4)]
    assert "BrokenPipeError" not in sup.log()


def test_a_child_whose_parent_died_before_it_could_ask_for_the_signal_exits_at_once() -> None:
    # Given a child that expects a parent other than the process that started it, as
    # when the expected parent died between the fork and the request
    def run(parent: int) -> bytes:
        out = subprocess.run(
            [sys.executable, "-c", "print('ran')"],
            preexec_fn=functools.partial(die_with_parent, parent, signal.SIGTERM),
            capture_output=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    # Then it exits before it runs anything; the one whose parent is there runs
    assert run(os.getppid()) == b""
    assert run(os.getpid()) == b"ran\n"


def test_a_child_watching_its_lifeline_exits_when_the_parent_lets_go() -> None:
    # Given a child that watches a pipe only its parent holds the write end of (the
    # watch for systems without a parent-death signal)
    read_end, write_end = os.pipe()
    code = (
        "import sys, time\n"
        "from multiprocessing.connection import Connection\n"
        "from tenure._worker.lineage import exit_at_eof\n"
        "exit_at_eof(Connection(int(sys.argv[1]), writable=False))\n"
        "time.sleep(60)\n"
        "print('outlived its parent')\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(read_end)],
        pass_fds=(read_end,),
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"},
    )
    os.close(read_end)
    # When the parent's end closes (as it does when the parent dies, however it dies)
    os.close(write_end)
    # Then the child exits at once, without running on
    out, _ = child.communicate(timeout=30)
    assert (child.returncode, out) == (0, b"")
