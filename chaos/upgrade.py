"""Rolling upgrades and rollbacks under a steady stream: the previous release's workers
and this code's on one schema, each replaced by the other release in turn.

    python -m chaos.upgrade [--dsn DSN] [--rounds 1] [--workers 2] [--rate 40]

1. The previous release (``chaos/releases.py``: its source from history, its own
   virtualenv) migrates a fresh schema and runs ``--workers`` workers; a sender of
   the previous release streams ``--rate`` tasks/s of ``chaos.app``'s work task.
2. Mid-run, this code migrates the schema (what it applies is reported), a sender of
   this code takes over the stream, and ``--workers`` workers of this code start
   beside the old ones.
3. Each round rolls every worker forward (SIGTERM one of the previous release, wait
   for its drain to end, start one of this code in its place) and then back (the
   rollback: each of this code's workers replaced by one of the previous release,
   whose sender takes the stream back), under the stream throughout.
4. The stream stops, the queue drains, every worker is stopped with SIGTERM, and
   ``chaos.checker`` judges what the database recorded.

Every worker must stay up until it is told to stop and then exit 0 (a refusal would
be an exit with its one line in the log, reported as such). The invariants are the
checker's: nothing lost, no overlapping leases, no stale outcome, no unexplained
duplicate run. The exit status is 1 when any fails. ``make chaos-upgrade`` runs
many rounds; ``tests/test_mixed_release.py`` runs one in the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql

import tenure
from chaos import checker
from chaos import releases as previous
from chaos.app import EFFECTS_DDL, SCHEMA_ENV
from tenure._db import connect as dbconnect
from tenure._db.migrate import migrate

ROOT = previous.ROOT
THIS = tenure.__version__

# A sender that either release can run: it streams the work task at a rate until
# SIGTERM, printing one JSON line per batch: the ids of a batch sent (the i-th carries
# payload n = first + i), or the one-line error of a batch refused (not sent: the
# stream goes on with the next).
SENDER = """
import json, signal, sys, time
from chaos.app import WORK, build
from tenure.errors import TenureError
schema, dsn, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
task = build(schema, dsn).tasks[WORK]
t0, sent = time.monotonic(), 0
while not stop:
    due = int((time.monotonic() - t0) * rate) - sent
    if due > 0:
        try:
            handles = task.send_many([{"ms": 20, "n": sent + i} for i in range(due)])
            ids = [h.id for h in handles]
            print(json.dumps({"ids": ids, "first": sent, "at": time.time()}), flush=True)
        except TenureError as exc:
            print(json.dumps({"refused": due, "error": str(exc)}), flush=True)
        sent += due
    time.sleep(0.05)
"""


@dataclass
class Release:
    """How to start processes of one release."""

    name: str
    python: str
    env: dict[str, str]
    cwd: Path


@dataclass
class Worker:
    release: Release
    proc: subprocess.Popen[bytes]
    log: Path


@dataclass
class Sender:
    release: Release
    proc: subprocess.Popen[str]
    log: Path
    ids: list[int] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)  # the payload's n of each id sent
    sent_at: dict[int, float] = field(default_factory=dict)  # payload n -> time.time() sent
    refused: list[str] = field(default_factory=list)  # the error of each batch refused
    refused_tasks: int = 0
    reader: threading.Thread | None = None


@dataclass
class Result:
    report: checker.Report
    schema: str
    started: Counter[str]  # workers started, by release
    senders: Counter[str]  # senders started, by release
    migrated_mid_run: list[str]
    exits: list[tuple[str, int | None]]  # (release, exit code) of every worker stopped
    seconds: float
    problems: list[str]
    logs: Path

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.problems

    def summary(self) -> str:
        r = self.report
        workers = ", ".join(f"{n} of tenure {rel}" for rel, n in self.started.items())
        return (
            f"mixed-release fleet on {self.schema}: {r.sent:,} tasks sent, {r.finished:,} "
            f"finished, in {self.seconds:.0f} s; workers started: {workers}; senders: "
            + ", ".join(f"{n} of tenure {rel}" for rel, n in self.senders.items())
            + f"; migrated mid-run by tenure {THIS}: "
            + (", ".join(self.migrated_mid_run) or "nothing")
            + f"; lost {r.lost}, overlapping leases {r.overlapping_leases}, stale outcomes "
            f"{r.stale_outcomes}, unexplained extra runs {r.unexplained_extra_runs}; "
            f"workers that did not exit 0 when stopped: "
            f"{sum(1 for _, code in self.exits if code != 0)} of {len(self.exits)}"
            + (f"; problems: {'; '.join(self.problems)}" if self.problems else "")
            + f"; logs in {self.logs}"
        )


class Fleet:
    def __init__(self, dsn: str, schema: str, logs: Path, args: list[str]) -> None:
        self.dsn, self.schema, self.logs, self.args = dsn, schema, logs, args
        self.workers: list[Worker] = []
        self.started: Counter[str] = Counter()
        self.exits: list[tuple[str, int | None]] = []
        self.problems: list[str] = []

    def _env(self, release: Release) -> dict[str, str]:
        return {
            **os.environ,
            **release.env,
            "TENURE_DATABASE_URL": self.dsn,
            SCHEMA_ENV: self.schema,
        }

    def start(self, release: Release) -> Worker:
        self.started[release.name] += 1
        log = self.logs / f"worker-{release.name}-{sum(self.started.values())}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [release.python, "-m", "tenure", "worker", "chaos.app:reg", *self.args],
                cwd=self.logs,
                env=self._env(release),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        w = Worker(release, proc, log)
        self.workers.append(w)
        return w

    def check_alive(self) -> None:
        for w in list(self.workers):
            code = w.proc.poll()
            if code is not None:
                tail = w.log.read_text(errors="replace").strip().splitlines()[-1:]
                self.problems.append(
                    f"a worker of tenure {w.release.name} exited by itself ({code}): "
                    + (tail[0] if tail else "no output")
                )
                self.exits.append((w.release.name, code))
                self.workers.remove(w)

    def stop(self, w: Worker, timeout: float = 30.0) -> None:
        """SIGTERM and wait for the drain to end."""
        w.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = w.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait(10)
            code = None
            self.problems.append(
                f"a worker of tenure {w.release.name} did not drain in {timeout} s"
            )
        self.exits.append((w.release.name, code))
        self.workers.remove(w)

    def kill_all(self) -> None:
        """After a failure of the harness: no worker outlives it."""
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait(10)
        self.workers.clear()

    def replace(self, old: Release, new: Release) -> None:
        """Replace each worker of ``old``, one at a time, with one of ``new``."""
        for w in [w for w in self.workers if w.release is old]:
            self.check_alive()
            if w not in self.workers:  # it died, and check_alive said so
                continue
            self.stop(w)
            self.start(new)
            time.sleep(1.0)  # the stream runs on while the newcomer starts


def drain_and_check(
    fleet: Fleet, conn: psycopg.Connection[Any], schema: str, sent: list[int], timeout: float
) -> checker.Report:
    """Wait up to ``timeout`` s for the queue to drain, stop every worker with SIGTERM,
    and judge what ``conn``'s server recorded."""
    deadline = time.monotonic() + timeout
    q = sql.SQL("SELECT count(*) FROM {}.tasks").format(sql.Identifier(schema))
    while conn.execute(q).fetchone() != (0,) and time.monotonic() < deadline:
        fleet.check_alive()
        time.sleep(0.25)
    fleet.check_alive()
    for w in list(fleet.workers):
        fleet.stop(w)
    return checker.check(conn, schema, sent, final=True, takeovers=False)


def start_sender(release: Release, dsn: str, schema: str, rate: float, logs: Path) -> Sender:
    env = {**os.environ, **release.env, "TENURE_DATABASE_URL": dsn}
    err = logs / f"sender-{release.name}-{time.monotonic_ns()}.log"
    with err.open("w") as stderr:
        proc = subprocess.Popen(
            [release.python, "-c", SENDER, schema, dsn, str(rate)],
            cwd=release.cwd,  # '' on sys.path is the release's own tree
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    s = Sender(release, proc, err)

    def read(out: IO[str]) -> None:
        for line in out:
            batch = json.loads(line)
            if "ids" in batch:
                s.ids.extend(batch["ids"])
                numbers = range(batch["first"], batch["first"] + len(batch["ids"]))
                s.numbers.extend(numbers)
                s.sent_at.update(dict.fromkeys(numbers, batch["at"]))
            else:
                s.refused.append(batch["error"])
                s.refused_tasks += int(batch["refused"])

    assert proc.stdout is not None
    s.reader = threading.Thread(target=read, args=(proc.stdout,), daemon=True)
    s.reader.start()
    return s


def stop_sender(s: Sender, problems: list[str], *, refusals_expected: bool = False) -> list[int]:
    """Stop the stream; the ids it sent. A batch refused is a problem unless
    ``refusals_expected`` (a failover under way)."""
    s.proc.send_signal(signal.SIGTERM)
    try:
        code = s.proc.wait(30)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        code = s.proc.wait(10)
    if s.reader is not None:
        s.reader.join(10)
    if code != 0:
        err = s.log.read_text(errors="replace").strip().splitlines()[-1:]
        problems.append(f"the sender of tenure {s.release.name} failed ({code}): {err}")
    if s.refused and not refusals_expected:
        problems.append(
            f"the sender of tenure {s.release.name} had {len(s.refused)} batches refused: "
            f"{s.refused[0]}"
        )
    return s.ids


def this_release() -> Release:
    src = str(Path(tenure.__file__).resolve().parent.parent)
    return Release(THIS, sys.executable, {"PYTHONPATH": os.pathsep.join([str(ROOT), src])}, ROOT)


def run(
    dsn: str,
    *,
    rounds: int = 1,
    workers: int = 2,
    rate: float = 40.0,
    lease: float = 2.0,
    phase_seconds: float = 3.0,
    cache: Path = previous.CACHE,
    logs: Path | None = None,
    schema: str | None = None,
) -> Result:
    t0 = time.monotonic()
    inst = previous.install(cache)
    old = Release(previous.RELEASE, str(inst.python), inst.env(), inst.source)
    new = this_release()
    schema = schema or f"upgrade_{os.getpid()}_{int(time.time()) % 10**6}"
    logs = logs or Path(tempfile.mkdtemp(prefix="tenure-upgrade-"))
    problems: list[str] = []
    # 1. the previous release makes the schema and runs the fleet and the stream
    previous.migrate(inst, dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(EFFECTS_DDL.replace("{schema}", "{s}")).format(s=sql.Identifier(schema))
        )
    args = ["--lease", f"{lease:g}s", "--drain-timeout", "5s", "--concurrency", "8"]
    args += ["--log-level", "info"]
    fleet = Fleet(dsn, schema, logs, args)
    senders: Counter[str] = Counter()
    sent: list[int] = []
    sender: Sender | None = None

    def stream(release: Release) -> Sender:
        """Hand the stream to a sender of ``release``."""
        nonlocal sent
        if sender is not None:
            sent += stop_sender(sender, problems)
        senders[release.name] += 1
        return start_sender(release, dsn, schema, rate, logs)

    try:
        for _ in range(workers):
            fleet.start(old)
        sender = stream(old)
        time.sleep(phase_seconds)
        # 2. this code migrates mid-run, takes over the stream and joins the fleet
        with dbconnect.connect(dsn, "tenure-migrate") as conn:
            migrated = migrate(conn, schema)
        sender = stream(new)
        for _ in range(workers):
            fleet.start(new)
        time.sleep(phase_seconds)
        # 3. roll forward, then back (the rollback), then forward again, under the stream
        for _ in range(rounds):
            fleet.replace(old, new)
            time.sleep(phase_seconds)
            sender = stream(old)
            fleet.replace(new, old)
            time.sleep(phase_seconds)
            sender = stream(new)
            fleet.replace(old, new)
            time.sleep(phase_seconds)
        sent += stop_sender(sender, problems)
        sender = None
        # 4. drain, stop, judge
        with psycopg.connect(dsn, autocommit=True) as conn:
            report = drain_and_check(fleet, conn, schema, sent, timeout=60)
    finally:
        if sender is not None:
            sender.proc.kill()
        fleet.kill_all()
    bad_exits = [f"{rel} exited {code}" for rel, code in fleet.exits if code != 0]
    problems += fleet.problems + ([f"workers stopped badly: {bad_exits}"] if bad_exits else [])
    return Result(
        report=report,
        schema=schema,
        started=fleet.started,
        senders=senders,
        migrated_mid_run=migrated,
        exits=fleet.exits,
        seconds=time.monotonic() - t0,
        problems=problems,
        logs=logs,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", default=os.environ.get("TENURE_DATABASE_URL", ""))
    p.add_argument("--rounds", type=int, default=1, help="forward-and-back rounds (1)")
    p.add_argument("--workers", type=int, default=2, help="workers of each release (2)")
    p.add_argument("--rate", type=float, default=40.0, help="tasks/s of the stream (40)")
    p.add_argument("--phase-seconds", type=float, default=3.0, help="between steps (3)")
    p.add_argument("--keep", action="store_true", help="keep the schema for a look after")
    a = p.parse_args(argv)
    if not 1 <= a.rounds <= 1000 or not 1 <= a.workers <= 16 or not 0 < a.rate <= 5000:
        p.error("--rounds 1..1000, --workers 1..16, --rate above 0 up to 5000")
    dsn = a.dsn
    if not dsn:
        from tenure.embedded import ensure_embedded

        dsn = ensure_embedded()
    schema = f"upgrade_{os.getpid()}_{int(time.time()) % 10**6}"
    try:
        res = run(
            dsn,
            rounds=a.rounds,
            workers=a.workers,
            rate=a.rate,
            phase_seconds=a.phase_seconds,
            schema=schema,
        )
    finally:
        if not a.keep:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
    print(res.summary())
    for line in res.report.violations():
        print(f"VIOLATION: {line}")
    print("verdict:", "OK" if res.ok else "FAIL")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
