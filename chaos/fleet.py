"""Worker slots of a campaign: real ``python -m tenure worker chaos.app:reg`` processes.

A slot is where a worker runs — directly on the database's socket, behind the loopback
proxy, inside a network namespace, under a far-off clock, or as a supervisor
(``--processes N``) whose children are the workers — and it keeps that place when its
worker is killed and restarted.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]

import tenure
from chaos.app import SCHEMA_ENV
from chaos.netns import Namespace

ROOT = Path(__file__).resolve().parent.parent
CHILD_STARTED = re.compile(r"child_started slot=\d+ pid=(\d+)")


def faketime_library() -> str:
    """The multi-threaded libfaketime of Debian's ``faketime`` package ('' if missing)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    return found[0] if found else ""


@dataclass
class Slot:
    name: str
    kind: str  # direct, proxied, netns, skewed, supervised
    dsn: str
    args: tuple[str, ...]
    schema: str
    log_dir: Path
    namespace: Namespace | None = None
    clock_offset: str = ""
    processes: int = 0  # > 0: a supervisor of this many children
    proc: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)
    starts: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self) -> None:
        argv = [sys.executable, "-m", "tenure", "worker", "chaos.app:reg", *self.args]
        if self.processes:
            argv += ["--processes", str(self.processes)]
        if self.namespace is not None:
            argv = self.namespace.command(argv)
        env = {
            **os.environ,
            "TENURE_DATABASE_URL": self.dsn,
            SCHEMA_ENV: self.schema,
            # The workers import the very tenure the driver imported (a scratch checkout's).
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(Path(tenure.__file__).parent.parent)]),
        }
        if self.kind == "skewed" and self.clock_offset:
            # What `faketime -f OFFSET` does, without its wrapper process: the worker's
            # own pid is the one signalled and the one its rows record.
            env.update(LD_PRELOAD=faketime_library(), FAKETIME=self.clock_offset)
        self.starts += 1
        log = (self.log_dir / f"{self.name}-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.pids.append(self.proc.pid)
        self.procs.append(self.proc)

    def children(self) -> list[int]:
        """Pids of the live children of the current process (a supervisor's workers)."""
        if not self.alive():
            return []
        with contextlib.suppress(psutil.Error):
            kids = psutil.Process(self.pid).children()
            return sorted(k.pid for k in kids if k.status() != psutil.STATUS_ZOMBIE)
        return []

    def worker_pids(self) -> list[int]:
        """Every pid that ran this slot's tasks: the workers, or a supervisor's children
        (each logged as it started)."""
        if not self.processes:
            return list(self.pids)
        return [int(m) for m in CHILD_STARTED.findall(self.logs())]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def kill_all(self) -> None:
        """SIGKILL every process this slot ever started that is still alive, and a
        supervisor's children first (they would otherwise drain after it is gone)."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    for kid in psutil.Process(proc.pid).children(recursive=True):
                        kid.kill()
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)

    def drain(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. The exit code."""
        if self.proc is None:
            return None
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def logs(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"{self.name}-*.log"))
        )
