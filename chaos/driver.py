"""The fault driver: a fleet of real workers, a steady stream of tasks, seeded faults.

Rules:
- The campaign runs against a PRIVATE embedded PostgreSQL in a temporary data dir, so
  restarting it never disturbs another test run; it is stopped at the end. With
  ``database="system"`` it runs against the system cluster instead (``chaos/database.py``),
  which is running again when the campaign ends, whatever happened.
- Every fault is chosen, placed and timed by one ``random.Random(seed)``; the seed is
  printed. Faults run one after another, each on a worker slot (or the database) that
  no other fault holds, with a short gap; a database restart waits until no other
  fault is active.
- Kinds: ``kill`` (SIGKILL, restarted shortly after), ``kill_child`` (SIGKILL of one
  child of a ``--processes`` supervisor; the fault lasts until the supervisor has
  replaced it, and counts against the supervisor if it has not within
  ``CHILD_RESTART_TIMEOUT``), ``stop`` (SIGSTOP at least a lease long, then SIGCONT),
  ``pg_restart``, ``proxy_drop``, ``proxy_blackhole``, ``proxy_latency`` (the proxied
  worker's connections), ``partition`` (the namespaced worker's link cut and restored)
  and ``clock`` (the skewed worker restarted under another far-off clock).
- A paused or blackholed worker comes back as soon as another worker took one of its
  tasks over, so its late outcomes meet the new owner's running attempt. A restarted
  worker (kill, clock, a supervisor's child) keeps its fault active until it has
  registered: until then it cannot take anything over, and the next fault must not
  count on it. A fault that left leases behind (kill, kill_child, stop, partition,
  proxy_blackhole) also lasts until they were taken over, so a database restart never
  lands inside a takeover: its downtime is not the lease protocol's to answer for.
- The invariant checker also runs during the campaign (``chaos/monitor.py``); what it
  finds there is reported with its time.
- Every loop is bounded in count and time; namespaces, proxies, workers and the server
  are cleaned up in ``finally``, also when the campaign fails.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from chaos import netns
from chaos.app import EFFECTS_DDL, LIMITED, WORK, build
from chaos.checker import Fault, Report, check, timeline
from chaos.database import SYSTEM_CLUSTER, SYSTEM_DSN, Database, Embedded, System
from chaos.fleet import Slot
from chaos.monitor import Monitor
from chaos.proxy import Proxy
from tenure._db.migrate import migrate

KINDS = (
    "kill",
    "kill_child",
    "stop",
    "pg_restart",
    "proxy_drop",
    "proxy_blackhole",
    "proxy_latency",
    "partition",
    "clock",
)
PROXY_KINDS = {"proxy_drop", "proxy_blackhole", "proxy_latency"}
# Which slot a kind hits when it is not any worker's: the proxy's, the namespace's…
FIXED_TARGET = {
    "partition": "netns",
    "clock": "skewed",
    "kill_child": "supervised",
    **{k: "proxied" for k in PROXY_KINDS},
}
CHILD_RESTART_TIMEOUT = 45.0  # the supervisor's backoff is capped at 30 s
SETTLE_TIMEOUT = 30.0  # a restarted worker registers within this, or the campaign goes on


@dataclass
class CampaignConfig:
    seed: int
    tasks: int = 20_000
    faults_per_kind: int = 30
    kinds: tuple[str, ...] = KINDS
    lease: float = 2.0
    direct_workers: int = 2
    concurrency: int = 16
    rate: float = 0.0  # tasks per second; 0: spread the tasks over the planned faults
    limited_share: float = 0.15
    gap: tuple[float, float] = (0.3, 1.0)
    max_duration: float = 1800.0
    drain_timeout: float = 120.0
    results_dir: Path | None = None
    verbose: bool = False
    database: str = "embedded"  # or "system": the cluster below, at system_dsn
    system_dsn: str = SYSTEM_DSN
    cluster: str = SYSTEM_CLUSTER
    check_interval: float = 3.0  # the invariant checker during the run
    supervised_processes: int = 2

    @property
    def heartbeat(self) -> float:
        """The workers' heartbeat and reaper interval: they are started with only
        ``--lease``, so both are a third of it (``WorkerConfig.heartbeat_interval``)."""
        return self.lease / 3

    @property
    def takeover_bound(self) -> float:
        """From a fault to the next attempt of a task the worker held, with the database
        up: the last renewal came before the fault, so the lease ends within a lease of
        it; a live worker's reaper runs within one interval after (jitter only shortens
        it); 1 s covers the reaper's NOTIFY and the claim it wakes."""
        return self.lease + self.heartbeat + 1.0


@dataclass
class Result:
    config: CampaignConfig
    report: Report
    faults: list[Fault]
    elapsed: float
    fenced_writes: int
    max_stale_lease: float
    timeline: dict[str, Any] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    runs_by_slot: dict[str, int] = field(default_factory=dict)

    def explain(self) -> str:
        """The violations, examples and seed: what a failing test prints."""
        rep = self.report
        return (
            f"seed={self.config.seed} kinds={self.config.kinds} violations={rep.violations()} "
            f"examples={rep.examples[:10]} slowest takeovers={rep.slowest_takeovers[:3]}"
        )


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Active:
    kind: str
    target: str
    heal_at: float
    fault: Fault
    undo: Callable[[], None]
    before: Callable[[], bool] | None = None  # undo only once this holds…
    give_up: float = 0.0  # …or this time came (then `missed` is told)
    missed: Callable[[], None] | None = None
    after: Callable[[], bool] | None = None  # undone, the fault lasts until this holds
    until: datetime | None = None  # when it was undone


class Campaign:
    def __init__(self, config: CampaignConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.faults: list[Fault] = []
        self.slots: dict[str, Slot] = {}
        self.proxies: list[Proxy] = []
        self.namespaces: list[netns.Namespace] = []
        self.sent: list[int] = []
        self.sent_at: list[tuple[float, int]] = []
        self.pg_down = False
        self._idle_since = float("inf")
        self.log_lines: list[str] = []
        self.children_killed = 0
        self.children_not_restarted = 0

    def say(self, text: str) -> None:
        self.log_lines.append(text)
        if self.cfg.verbose:
            print(text, flush=True)

    # -- set-up -----------------------------------------------------------------------

    def _plan(self) -> list[str]:
        plan = [k for k in self.cfg.kinds for _ in range(self.cfg.faults_per_kind)]
        self.rng.shuffle(plan)
        return plan

    def _setup(self, base: Path) -> None:
        cfg = self.cfg
        base.chmod(0o755)  # the server user (root runs PostgreSQL as tenure-pg) must reach it
        self.db: Database = (
            System(cfg.system_dsn, cfg.cluster)
            if cfg.database == "system"
            else Embedded(base / "pg")
        )
        self.dsn = self.db.dsn
        self.schema = f"chaos_{cfg.seed % 10**8:08d}_{int(time.time()) % 10**6}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            migrate(conn, self.schema)
            conn.execute(
                sql.SQL(EFFECTS_DDL.replace("{schema}", "{s}")).format(
                    s=sql.Identifier(self.schema)
                )
            )
        self.registry = build(self.schema, self.dsn)
        common = ("--lease", f"{cfg.lease}s", "--drain-timeout", "1s", "--log-level", "info")
        args = (*common, "--concurrency", str(cfg.concurrency))
        logs = base / "logs"
        logs.mkdir()
        self.log_dir = logs
        for i in range(cfg.direct_workers):
            self.slots[f"direct{i}"] = Slot(
                f"direct{i}", "direct", self.dsn, args, self.schema, logs
            )
        if "kill_child" in cfg.kinds:
            n = cfg.supervised_processes
            child_args = (*common, "--concurrency", str(max(1, cfg.concurrency // n)))
            self.slots["supervised"] = Slot(
                "supervised", "supervised", self.dsn, child_args, self.schema, logs, processes=n
            )
        if PROXY_KINDS & set(cfg.kinds):
            proxy = Proxy(self.db.target, seed=cfg.seed)
            self.proxies.append(proxy)
            self.proxy = proxy
            dsn = make_conninfo(self.dsn, host="127.0.0.1", port=str(proxy.port))
            self.slots["proxied"] = Slot("proxied", "proxied", dsn, args, self.schema, logs)
        if "partition" in cfg.kinds:
            netns.sweep()
            host = netns.Host(1 + cfg.seed % 200, self.dsn, seed=cfg.seed + 1)
            self.namespaces.append(host.namespace)
            self.proxies.append(host.proxy)
            self.slots["netns"] = Slot(
                "netns", "netns", host.dsn, args, self.schema, logs, host.namespace
            )
        if "clock" in cfg.kinds:
            self.slots["skewed"] = Slot(
                "skewed", "skewed", self.dsn, args, self.schema, logs,
                clock_offset=self._offset(),
            )  # fmt: skip
        for slot in self.slots.values():
            slot.start()
        self.conn = psycopg.connect(self.dsn, autocommit=True)

    def _offset(self) -> str:
        hours = self.rng.choice([-1, 1]) * self.rng.randint(1, 48)
        return f"{hours:+d}h"

    # -- faults -----------------------------------------------------------------------

    def _target(self, kind: str, busy: set[str]) -> str | None:
        if kind == "pg_restart":
            return None if busy else "db"
        if len(busy & set(self.slots)) + 1 >= len(self.slots):
            return None  # at least one healthy worker stays to take the work over
        if kind in FIXED_TARGET:
            free = [FIXED_TARGET[kind]] if FIXED_TARGET[kind] not in busy else []
            if kind in ("clock", "proxy_drop", "proxy_latency"):
                return free[0] if free else None
        else:  # the supervisor's children have their own kind
            free = sorted(n for n in self.slots if n not in busy and n != "supervised")
        holding = self._holding()  # prefer a worker with work in flight: that is the test
        loaded = [n for n in free if set(self._workers_of(n)) & holding]
        if not loaded and time.monotonic() - self._idle_since < 3.0:
            return None  # wait a little for a worker with work in flight
        return self.rng.choice(loaded or free) if free else None

    def _workers_of(self, name: str) -> list[int]:
        """The pids of a slot's live workers: its process, or a supervisor's children."""
        slot = self.slots[name]
        if not slot.processes:
            return [slot.pid]
        kids = slot.children()
        return kids if len(kids) == slot.processes else []  # not while one restarts

    def _inject(self, kind: str, target: str) -> _Active:
        lease = self.cfg.lease
        rng = self.rng
        slot = self.slots.get(target)
        now = time.monotonic()
        if kind == "kill":
            assert slot is not None
            pid = slot.pid
            slot.kill()
            fault = Fault(kind, _now(), (pid,), target)
            held = self._held_by(pid)
            # Over once the new worker registered (until then it is not there to take
            # over) and the dead one's leases were taken over.
            return _Active(
                kind, target, now + rng.uniform(0.2, 1.0), fault, slot.start,
                after=lambda: self._registered([slot.pid]) and self._settled(held, dead=True),
            )  # fmt: skip
        if kind == "kill_child":
            assert slot is not None
            kids = self._workers_of(target)
            child = rng.choice(sorted(set(kids) & self._holding()) or kids)
            os.kill(child, signal.SIGKILL)
            fault = Fault(kind, _now(), (child,), f"child {child} of supervisor {slot.pid}")
            held = self._held_by(child)
            self.children_killed += 1

            def replaced() -> bool:
                kids = slot.children()
                return len(kids) == slot.processes and child not in kids and self._registered(kids)

            def missed() -> None:
                self.children_not_restarted += 1
                self.say(f"child {child} of supervisor {slot.pid} was NOT replaced")

            return _Active(
                kind, target, now + 0.2, fault, lambda: None,
                before=replaced, give_up=now + CHILD_RESTART_TIMEOUT, missed=missed,
                after=lambda: self._settled(held, dead=True),
            )  # fmt: skip
        if kind == "stop":
            assert slot is not None
            slot.signal(signal.SIGSTOP)
            fault = Fault(kind, _now(), (slot.pid,), target)
            return self._until_taken_over(
                fault, target, slot.pid, lambda: slot.signal(signal.SIGCONT)
            )
        if kind == "pg_restart":
            fault = Fault(kind, _now(), (), f"{self.db.label} server, fast shutdown")
            self.pg_down = True
            self.db.stop()
            down = rng.uniform(0.5, 2.0)

            def start() -> None:
                self.db.start()
                self.pg_down = False
                with contextlib.suppress(Exception):
                    self.conn.close()
                self.conn = psycopg.connect(self.dsn, autocommit=True)

            return _Active(kind, target, now + down, fault, start)
        if kind == "partition":
            assert slot is not None and slot.namespace is not None
            slot.namespace.cut()
            fault = Fault(kind, _now(), (slot.pid,), slot.namespace.name)
            held = self._held_by(slot.pid)
            hold = rng.uniform(1.3, 2.5) * lease
            return _Active(
                kind, target, now + hold, fault, slot.namespace.restore,
                after=lambda: self._settled(held, dead=False),
            )  # fmt: skip
        if kind == "clock":
            assert slot is not None
            slot.drain(15)
            slot.clock_offset = self._offset()
            slot.start()
            fault = Fault(kind, _now(), (), f"faketime {slot.clock_offset}")
            return _Active(
                kind, target, now + rng.uniform(0.5, 1.5), fault, lambda: None,
                before=lambda: self._registered([slot.pid]), give_up=now + SETTLE_TIMEOUT,
            )  # fmt: skip
        proxy = self.proxy
        if kind == "proxy_drop":
            proxy.set_mode("drop")
            fault = Fault(kind, _now(), (), "drop")
            hold = rng.uniform(0.2, 1.5)
        elif kind == "proxy_blackhole":
            proxy.set_mode("blackhole")
            assert slot is not None
            fault = Fault(kind, _now(), (slot.pid,), "blackhole")
            return self._until_taken_over(fault, target, slot.pid, lambda: proxy.set_mode("pass"))
        else:
            latency = rng.uniform(0.02, 0.3)
            jitter = rng.uniform(0.0, 0.2)
            proxy.set_mode("latency", latency, jitter)
            fault = Fault(kind, _now(), (), f"latency {latency * 1000:.0f}ms+{jitter * 1000:.0f}")
            hold = rng.uniform(1.5, 3.0)
        return _Active(kind, target, now + hold, fault, lambda: proxy.set_mode("pass"))

    def _until_taken_over(
        self, fault: Fault, target: str, pid: int, undo: Callable[[], None]
    ) -> _Active:
        """A worker cut off (paused, blackholed) past its lease comes back as soon as
        another worker has taken one of its tasks over: its late outcomes then arrive
        while the new owner's attempt runs, which is what the fence must refuse. It
        comes back by lease + heartbeat + 0.2–1.2 s in any case."""
        lease, now = self.cfg.lease, time.monotonic()
        held = self._held_by(pid)
        give_up = now + lease + self.cfg.heartbeat + self.rng.uniform(0.2, 1.2)
        return _Active(
            fault.kind, target, now + lease, fault, undo,
            before=lambda: self._taken_over(held), give_up=give_up,
            after=lambda: self._settled(held, dead=False),
        )  # fmt: skip

    def _query(self, text: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Rows of a campaign query on the driver's connection; none if it fails (the
        database may be restarting: the caller asks again on a later tick)."""
        try:
            query = sql.SQL(text).format(s=sql.Identifier(self.schema))
            return self.conn.execute(query, params).fetchall()
        except psycopg.Error:
            return []

    def _held_by(self, pid: int) -> dict[int, int]:
        """The tasks the worker ``pid`` holds now: task id → attempt."""
        rows = self._query(
            "SELECT t.id, t.attempt FROM {s}.tasks t JOIN {s}.workers w ON w.id = t.lease_owner "
            "WHERE t.state = 'running' AND w.pid = %(pid)s",
            {"pid": pid},
        )
        return {int(r[0]): int(r[1]) for r in rows}

    def _taken_over(self, held: dict[int, int]) -> bool:
        """Whether another worker now holds a later attempt of one of ``held``."""
        rows = self._query(
            "SELECT count(*) FROM {s}.tasks t "
            "JOIN unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS h(id, attempt) "
            "ON h.id = t.id WHERE t.state = 'running' AND t.attempt > h.attempt",
            {"ids": list(held), "attempts": list(held.values())},
        )
        return bool(rows and rows[0][0])

    def _settled(self, held: dict[int, int], *, dead: bool) -> bool:
        """Whether no attempt of ``held`` still waits to be taken over: none is queued
        (reaped, not yet claimed again), none is running on an expired lease, and, if
        its worker is ``dead``, none is running at all. A fault lasts until then, so a
        database restart (which waits for no fault to be active) never falls inside a
        takeover and charges its downtime to the lease protocol. A retry backing off
        (``scheduled``) is not waited for, nor is a lease the worker renewed once it
        came back."""
        if not held:
            return True
        rows = self._query(
            "SELECT count(*) FROM {s}.tasks t "
            "JOIN unnest(%(ids)s::bigint[], %(attempts)s::integer[]) AS h(id, attempt) "
            "ON h.id = t.id WHERE t.attempt = h.attempt AND (t.state = 'queued' "
            "OR (t.state = 'running' AND (%(dead)s OR t.lease_expires_at < clock_timestamp())))",
            {"ids": list(held), "attempts": list(held.values()), "dead": dead},
        )
        return bool(rows) and rows[0][0] == 0  # unknown (no answer): not yet

    def _registered(self, pids: list[int]) -> bool:
        """Whether every one of ``pids`` runs a registered, active worker."""
        rows = self._query(
            "SELECT count(DISTINCT pid) FROM {s}.workers WHERE pid = ANY(%(pids)s) "
            "AND state = 'active'",
            {"pids": pids},
        )
        return bool(pids) and bool(rows) and rows[0][0] == len(set(pids))

    # -- the run ----------------------------------------------------------------------

    def _send(self, count: int) -> None:
        # Tasks long enough that every worker has work in flight when a fault hits.
        plain: list[dict[str, int]] = []
        limited: list[dict[str, int]] = []
        for i in range(count):
            n = len(self.sent) + i
            if self.rng.random() < self.cfg.limited_share:
                limited.append({"ms": self.rng.randint(200, 600), "n": n})
            else:
                plain.append({"ms": self.rng.randint(100, 1000), "n": n})
        ids: list[int] = []
        try:
            if plain:
                ids += [h.id for h in self.registry.tasks[WORK].send_many(plain)]
            if limited:
                ids += [h.id for h in self.registry.tasks[LIMITED].send_many(limited)]
        except Exception as exc:  # a database restart: the next tick sends again
            self.say(f"send failed: {exc}")
        self.sent += ids
        if ids:
            self.sent_at.append((time.monotonic(), len(ids)))

    def run(self) -> Result:
        base = Path(tempfile.mkdtemp(prefix="tenure-chaos-"))
        started = time.monotonic()
        try:
            self._setup(base)
            return self._run(started)
        finally:
            self._teardown(base)

    def _run(self, started: float) -> Result:
        cfg = self.cfg
        plan = self._plan()
        mean_gap = sum(cfg.gap) / 2
        planned = len(plan) * (mean_gap + 1.5 * cfg.lease) + 5
        rate = cfg.rate or max(20.0, cfg.tasks / planned)
        self.say(f"seed={cfg.seed} faults={len(plan)} tasks={cfg.tasks} rate={rate:.0f}/s")
        self._wait_fleet(120.0)  # generous: a loaded machine starts Python slowly
        t0 = time.monotonic()
        active: list[_Active] = []
        next_fault = t0 + self.rng.uniform(*cfg.gap)
        monitor = Monitor(
            self.dsn, self.schema, lambda: list(self.faults), t0, cfg.check_interval, say=self.say
        )
        monitor.start()
        try:
            self._loop(t0, plan, rate, active, next_fault)
            self.say(f"{time.monotonic() - t0:7.1f}s all faults done; sent {len(self.sent)}")
            self._wait_finished(cfg.drain_timeout)
        finally:
            monitor.stop()
        fenced = 0
        for slot in self.slots.values():
            slot.drain(20)
        logs = {name: slot.logs() for name, slot in self.slots.items()}
        for text in logs.values():
            fenced += text.count("lease_lost")
        report = check(
            self.conn, self.schema, self.sent, self.faults, takeover_bound=cfg.takeover_bound
        )
        if cfg.results_dir is not None:
            self._dump_attempts(cfg.results_dir / "attempts.csv")
        report.midrun_checks = monitor.passes
        report.midrun_violations = [str(f) for f in monitor.findings]
        report.children_killed = self.children_killed
        report.children_not_restarted = self.children_not_restarted
        elapsed = time.monotonic() - started
        runs: dict[int, int] = dict(
            self.conn.execute(
                sql.SQL("SELECT pid, count(*) FROM {s}.chaos_effects GROUP BY pid").format(
                    s=sql.Identifier(self.schema)
                )
            ).fetchall()
        )
        by_slot = {n: sum(runs.get(p, 0) for p in s.worker_pids()) for n, s in self.slots.items()}
        wall0 = _now().timestamp() - (time.monotonic() - t0)
        return Result(
            cfg, report, self.faults, elapsed, fenced, monitor.max_stale_lease,
            timeline=timeline(self.conn, self.schema, self.faults, wall0),
            logs=logs, runs_by_slot=by_slot,
        )  # fmt: skip

    def _dump_attempts(self, path: Path) -> None:
        """Every attempt with its task name and worker pid, as CSV: what a slow takeover
        is traced with once the campaign's server is gone."""
        query = sql.SQL(
            "COPY (SELECT a.task_id, a.attempt, coalesce(f.task_name, t.task_name) AS task_name, "
            "w.pid, a.worker_id, a.started_at, a.ended_at, a.outcome "
            "FROM {s}.attempts a LEFT JOIN {s}.workers w ON w.id = a.worker_id "
            "LEFT JOIN {s}.finished_tasks f ON f.id = a.task_id "
            "LEFT JOIN {s}.tasks t ON t.id = a.task_id "
            "ORDER BY a.started_at, a.task_id, a.attempt) TO STDOUT WITH (FORMAT csv, HEADER)"
        ).format(s=sql.Identifier(self.schema))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out, self.conn.cursor().copy(query) as copy:
            for chunk in copy:
                out.write(chunk)

    def _heal(self, a: _Active, now: float, t0: float) -> bool:
        """Undo a fault whose time is up; True once it is over (its target free again)."""
        if a.until is None:
            if a.heal_at > now:
                return False
            if a.before is not None and not a.before():
                if now < a.give_up:
                    return False
                if a.missed is not None:
                    a.missed()
            a.undo()
            a.until = _now()
            a.heal_at = now
        if a.after is not None and now < a.heal_at + SETTLE_TIMEOUT and not a.after():
            return False
        self.faults.append(Fault(a.fault.kind, a.fault.at, a.fault.pids, a.fault.detail, a.until))
        self.say(f"{now - t0:7.1f}s healed {a.kind} on {a.target}")
        return True

    def _loop(
        self, t0: float, plan: list[str], rate: float, active: list[_Active], next_fault: float
    ) -> None:
        cfg = self.cfg
        deadline = t0 + cfg.max_duration
        while time.monotonic() < deadline and (plan or active or len(self.sent) < cfg.tasks):
            now = time.monotonic()
            for a in [a for a in active if self._heal(a, now, t0)]:
                active.remove(a)
                next_fault = max(next_fault, now + self.rng.uniform(*cfg.gap))
            for slot in self.slots.values():  # a worker that died on its own comes back
                if not slot.alive() and slot.name not in {a.target for a in active}:
                    self.say(f"{now - t0:7.1f}s {slot.name} exited on its own; restarting")
                    slot.start()
            if plan and now >= next_fault and len(active) < 2:
                busy = {a.target for a in active}
                if "db" not in busy:
                    target = self._target(plan[0], busy)
                    if target is None:
                        self._idle_since = min(self._idle_since, now)
                    else:
                        self._idle_since = float("inf")
                        kind = plan.pop(0)
                        active.append(self._inject(kind, target))
                        self.say(
                            f"{now - t0:7.1f}s inject {kind} on {target} "
                            f"({active[-1].fault.detail}; sent {len(self.sent)})"
                        )
                        next_fault = now + self.rng.uniform(*cfg.gap)
            if not self.pg_down:
                due = min(cfg.tasks, int((now - t0) * rate)) - len(self.sent)
                if due > 0:
                    self._send(min(due, 500))
            time.sleep(0.05)
        for a in active:  # out of time: heal what is still broken
            self._heal(a, float("inf"), t0)

    def _wait_fleet(self, timeout: float) -> None:
        """Until every slot's worker registered (so the first fault hits a live fleet)."""
        deadline = time.monotonic() + timeout
        query = sql.SQL("SELECT count(*) FROM {s}.workers WHERE state = 'active'").format(
            s=sql.Identifier(self.schema)
        )
        workers = sum(max(1, s.processes) for s in self.slots.values())
        while time.monotonic() < deadline:
            row = self.conn.execute(query).fetchone()
            if row is not None and row[0] >= workers:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the fleet did not come up within {timeout:.0f}s")

    def _holding(self) -> set[int]:
        """Pids of the workers holding leases now."""
        rows = self._query(
            "SELECT DISTINCT w.pid FROM {s}.tasks t JOIN {s}.workers w ON w.id = t.lease_owner "
            "WHERE t.state = 'running'",
            {},
        )
        return {int(r[0]) for r in rows}

    def _wait_finished(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                row = self.conn.execute(
                    sql.SQL("SELECT count(*) FROM {s}.tasks").format(s=sql.Identifier(self.schema))
                ).fetchone()
                if row is not None and row[0] == 0:
                    return
            except psycopg.OperationalError:
                self.conn = psycopg.connect(self.dsn, autocommit=True)
            for slot in self.slots.values():
                if not slot.alive():
                    slot.start()
            time.sleep(0.2)

    def _teardown(self, base: Path) -> None:
        for slot in self.slots.values():
            with contextlib.suppress(Exception):
                slot.kill_all()
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                proxy.close()
        for ns in self.namespaces:
            with contextlib.suppress(Exception):
                ns.remove()
        with contextlib.suppress(Exception):
            self.conn.close()
        db: Database | None = getattr(self, "db", None)
        try:
            if db is not None:
                db.close(getattr(self, "schema", ""))
        except Exception as exc:  # said loudly: a system server may need a hand
            print(f"chaos: could not restore the {db and db.label} server: {exc}", file=sys.stderr)
        if self.cfg.results_dir is not None:
            with contextlib.suppress(Exception):
                dest = self.cfg.results_dir / "logs"
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(base / "logs", dest)
        shutil.rmtree(base, ignore_errors=True)


def run_campaign(config: CampaignConfig) -> Result:
    """Run one campaign and judge it; the server, fleet and namespaces are gone after."""
    return Campaign(config).run()
