"""The fault driver: a fleet of real workers, a steady stream of tasks, seeded faults.

Rules:
- The campaign runs against a PRIVATE embedded PostgreSQL in a temporary data dir, so
  restarting it never disturbs another test run; it is stopped at the end.
- Every fault is chosen, placed and timed by one ``random.Random(seed)``; the seed is
  printed. Faults run one after another, each on a worker slot (or the database) that
  no other fault holds, with a short gap; a database restart waits until no other
  fault is active.
- Kinds: ``kill`` (SIGKILL, restarted shortly after), ``stop`` (SIGSTOP longer than
  the lease, then SIGCONT), ``pg_restart``, ``proxy_drop``, ``proxy_blackhole``,
  ``proxy_latency`` (the proxied worker's connections), ``partition`` (the namespaced
  worker's link cut and restored) and ``clock`` (the skewed worker restarted under
  another far-off clock).
- Every loop is bounded in count and time; namespaces, proxies, workers and the server
  are cleaned up in ``finally``, also when the campaign fails.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from chaos import netns
from chaos.app import EFFECTS_DDL, LIMITED, WORK, build
from chaos.checker import Fault, Report, check, stale_leases
from chaos.fleet import Slot
from chaos.proxy import Proxy
from tenure._db.embedded import EmbeddedServer
from tenure._db.migrate import migrate

KINDS = (
    "kill",
    "stop",
    "pg_restart",
    "proxy_drop",
    "proxy_blackhole",
    "proxy_latency",
    "partition",
    "clock",
)
PROXY_KINDS = {"proxy_drop", "proxy_blackhole", "proxy_latency"}


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

    @property
    def heartbeat(self) -> float:
        return self.lease / 3

    @property
    def takeover_bound(self) -> float:
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
            f"examples={rep.examples[:10]}"
        )


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Active:
    kind: str
    target: str
    heal_at: float
    fault: Fault
    undo: Any


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
        self.server = EmbeddedServer(base / "pg")
        self.dsn = self.server.join()
        self.socket = str(self.server.socket_dir / ".s.PGSQL.5432")
        self.schema = f"chaos_{cfg.seed % 10**8:08d}_{int(time.time()) % 10**6}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            migrate(conn, self.schema)
            conn.execute(
                sql.SQL(EFFECTS_DDL.replace("{schema}", "{s}")).format(
                    s=sql.Identifier(self.schema)
                )
            )
        self.registry = build(self.schema, self.dsn)
        args = (
            "--lease", f"{cfg.lease}s", "--concurrency", str(cfg.concurrency),
            "--drain-timeout", "1s", "--log-level", "info",
        )  # fmt: skip
        logs = base / "logs"
        logs.mkdir()
        self.log_dir = logs
        for i in range(cfg.direct_workers):
            self.slots[f"direct{i}"] = Slot(
                f"direct{i}", "direct", self.dsn, args, self.schema, logs
            )
        if PROXY_KINDS & set(cfg.kinds):
            proxy = Proxy(self.socket, seed=cfg.seed)
            self.proxies.append(proxy)
            self.proxy = proxy
            dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
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
        fixed = {"partition": "netns", "clock": "skewed"}
        fixed.update({k: "proxied" for k in PROXY_KINDS})
        if kind in fixed:
            free = [fixed[kind]] if fixed[kind] not in busy else []
            if kind in ("clock", "proxy_drop", "proxy_latency"):
                return free[0] if free else None
        else:
            free = sorted(n for n in self.slots if n not in busy)
        holding = self._holding()  # prefer a worker with work in flight: that is the test
        loaded = [n for n in free if self.slots[n].pid in holding]
        if not loaded and time.monotonic() - self._idle_since < 3.0:
            return None  # wait a little for a worker with work in flight
        return self.rng.choice(loaded or free) if free else None

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
            return _Active(kind, target, now + rng.uniform(0.2, 1.0), fault, slot.start)
        if kind == "stop":
            assert slot is not None
            slot.signal(signal.SIGSTOP)
            fault = Fault(kind, _now(), (slot.pid,), target)
            # Resume just after the takeover: the paused worker's late outcomes then land
            # while the new owner's attempt runs, which is what the fence must refuse.
            hold = lease + self.cfg.heartbeat + rng.uniform(0.2, 1.2)
            return _Active(kind, target, now + hold, fault, lambda: slot.signal(signal.SIGCONT))
        if kind == "pg_restart":
            fault = Fault(kind, _now(), (), "fast shutdown")
            self.pg_down = True
            self.server.stop()
            down = rng.uniform(0.5, 2.0)

            def start() -> None:
                self.server = EmbeddedServer(self.server.data_dir)
                self.server.join()
                self.pg_down = False
                with contextlib.suppress(Exception):
                    self.conn.close()
                self.conn = psycopg.connect(self.dsn, autocommit=True)

            return _Active(kind, target, now + down, fault, start)
        if kind == "partition":
            assert slot is not None and slot.namespace is not None
            slot.namespace.cut()
            fault = Fault(kind, _now(), (slot.pid,), slot.namespace.name)
            hold = rng.uniform(1.3, 2.5) * lease
            return _Active(kind, target, now + hold, fault, slot.namespace.restore)
        if kind == "clock":
            assert slot is not None
            slot.drain(15)
            slot.clock_offset = self._offset()
            slot.start()
            fault = Fault(kind, _now(), (), f"faketime {slot.clock_offset}")
            return _Active(kind, target, now + rng.uniform(0.5, 1.5), fault, lambda: None)
        proxy = self.proxy
        if kind == "proxy_drop":
            proxy.set_mode("drop")
            fault = Fault(kind, _now(), (), "drop")
            hold = rng.uniform(0.2, 1.5)
        elif kind == "proxy_blackhole":
            proxy.set_mode("blackhole")
            assert slot is not None
            fault = Fault(kind, _now(), (slot.pid,), "blackhole")
            hold = lease + self.cfg.heartbeat + rng.uniform(0.2, 1.2)
        else:
            latency = rng.uniform(0.02, 0.3)
            jitter = rng.uniform(0.0, 0.2)
            proxy.set_mode("latency", latency, jitter)
            fault = Fault(kind, _now(), (), f"latency {latency * 1000:.0f}ms+{jitter * 1000:.0f}")
            hold = rng.uniform(1.5, 3.0)
        return _Active(kind, target, now + hold, fault, lambda: proxy.set_mode("pass"))

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
        self._wait_fleet(30.0)
        t0 = time.monotonic()
        deadline = t0 + cfg.max_duration
        active: list[_Active] = []
        next_fault = t0 + self.rng.uniform(*cfg.gap)
        max_stale = 0.0
        next_sample = t0 + 2.0
        while time.monotonic() < deadline and (plan or active or len(self.sent) < cfg.tasks):
            now = time.monotonic()
            for a in [a for a in active if a.heal_at <= now]:
                a.undo()
                active.remove(a)
                self.faults.append(
                    Fault(a.fault.kind, a.fault.at, a.fault.pids, a.fault.detail, _now())
                )
                self.say(f"{now - t0:7.1f}s healed {a.kind} on {a.target}")
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
                if now >= next_sample:
                    next_sample = now + 2.0
                    with contextlib.suppress(Exception):
                        max_stale = max(max_stale, stale_leases(self.conn, self.schema))
            time.sleep(0.05)
        for a in active:  # out of time: heal what is still broken
            a.undo()
            self.faults.append(
                Fault(a.fault.kind, a.fault.at, a.fault.pids, a.fault.detail, _now())
            )
        self.say(f"{time.monotonic() - t0:7.1f}s all faults done; sent {len(self.sent)}")
        self._wait_finished(cfg.drain_timeout)
        fenced = 0
        for slot in self.slots.values():
            slot.drain(20)
        logs = {name: slot.logs() for name, slot in self.slots.items()}
        for text in logs.values():
            fenced += text.count("lease_lost")
        report = check(
            self.conn, self.schema, self.sent, self.faults, takeover_bound=cfg.takeover_bound
        )
        elapsed = time.monotonic() - started
        runs = dict(
            self.conn.execute(
                sql.SQL("SELECT pid, count(*) FROM {s}.chaos_effects GROUP BY pid").format(
                    s=sql.Identifier(self.schema)
                )
            ).fetchall()
        )
        by_slot = {n: sum(runs.get(p, 0) for p in s.pids) for n, s in self.slots.items()}
        return Result(
            cfg, report, self.faults, elapsed, fenced, max_stale,
            timeline=self._timeline(t0), logs=logs, runs_by_slot=by_slot,
        )  # fmt: skip

    def _wait_fleet(self, timeout: float) -> None:
        """Until every slot's worker registered (so the first fault hits a live fleet)."""
        deadline = time.monotonic() + timeout
        query = sql.SQL("SELECT count(*) FROM {s}.workers WHERE state = 'active'").format(
            s=sql.Identifier(self.schema)
        )
        while time.monotonic() < deadline:
            row = self.conn.execute(query).fetchone()
            if row is not None and row[0] >= len(self.slots):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the fleet did not come up within {timeout:.0f}s")

    def _holding(self) -> set[int]:
        """Pids of the workers holding leases now."""
        query = sql.SQL(
            "SELECT DISTINCT w.pid FROM {s}.tasks t JOIN {s}.workers w ON w.id = t.lease_owner "
            "WHERE t.state = 'running'"
        ).format(s=sql.Identifier(self.schema))
        try:
            return {r[0] for r in self.conn.execute(query).fetchall()}
        except psycopg.Error:
            return set()

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

    def _timeline(self, t0: float) -> dict[str, Any]:
        wall0 = _now().timestamp() - (time.monotonic() - t0)
        rows = self.conn.execute(
            sql.SQL(
                "SELECT floor(extract(epoch FROM ended_at) - %s)::int AS s, count(*) "
                "FROM {s}.attempts WHERE outcome = 'succeeded' GROUP BY 1 ORDER BY 1"
            ).format(s=sql.Identifier(self.schema)),
            (wall0,),
        ).fetchall()
        return {
            "throughput": [[int(s), int(n)] for s, n in rows],
            "faults": [
                [f.kind, f.at.timestamp() - wall0, (f.until or f.at).timestamp() - wall0]
                for f in self.faults
            ],
            "takeovers": self._takeover_points(wall0),
        }

    def _takeover_points(self, wall0: float) -> list[list[float]]:
        rows = self.conn.execute(
            sql.SQL(
                "SELECT extract(epoch FROM b.started_at) - %s, "
                "extract(epoch FROM b.started_at - a.ended_at) "
                "FROM {s}.attempts a JOIN {s}.attempts b "
                "ON b.task_id = a.task_id AND b.attempt = a.attempt + 1 "
                "WHERE a.outcome = 'lease_expired'"
            ).format(s=sql.Identifier(self.schema)),
            (wall0,),
        ).fetchall()
        return [[float(t), float(d)] for t, d in rows]

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
        with contextlib.suppress(Exception):
            EmbeddedServer(base / "pg").stop()
        if self.cfg.results_dir is not None:
            with contextlib.suppress(Exception):
                dest = self.cfg.results_dir / "logs"
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(base / "logs", dest)
        shutil.rmtree(base, ignore_errors=True)


def run_campaign(config: CampaignConfig) -> Result:
    """Run one campaign and judge it; the server, fleet and namespaces are gone after."""
    return Campaign(config).run()
