"""A highly available PostgreSQL on this machine: etcd and three Patroni nodes.

Rules:
- Each node is a network namespace made here (``chaos.netns.Namespace``, numbers
  from :data:`FIRST_NODE`), where Patroni runs the system PostgreSQL 15 binaries as
  the ``postgres`` user, listening on the namespace's own address, port 5432. One
  etcd runs outside, listening on loopback and on the host end of each node's veth;
  the host forwards between namespaces, so the nodes replicate to each other and
  every test process reaches each of them. Nothing listens on any other address.
- ``synchronous=True`` runs Patroni's synchronous mode (one synchronous standby:
  a commit is acknowledged once it is on two nodes); ``False`` replicates
  asynchronously.
- The three ways a primary goes: :meth:`Cluster.crash` kills the primary node's
  Patroni and postmaster with SIGKILL (a machine gone; its leader key expires after
  the TTL); :meth:`Cluster.cut` takes its link down (it is cut off from etcd, the
  standbys and every client, and demotes itself after the TTL); :meth:`Cluster.
  switchover` asks Patroni for a planned switchover. :meth:`Cluster.heal` brings
  the old primary back as a standby (Patroni rewinds it). A standby that does not
  stream within :data:`REJOIN_S` is rebuilt as an operator would (stopped, its data
  deleted, started again), and a failover Patroni does not make within
  :data:`ELECTION_S` is made by hand; both are counted (``rebuilt``, ``forced``).
- Times come from ``time.time()`` of this machine, which is every node's clock unless
  ``skew`` sets them apart: then node2's runs ``skew`` seconds ahead and node3's as
  far behind (libfaketime in its Patroni and PostgreSQL), and a node's
  ``clock_offset`` says by how much.
- ``start_haproxy()`` puts a HAProxy on loopback in front, which follows Patroni's
  REST API to the primary: the single-host DSN a client of such a setup holds.
- ``close()`` stops every process, deletes the namespaces and the data, and sets
  IP forwarding back as it was (left on while another cluster's namespaces remain);
  leftovers of a run killed before it could are
  removed by the next (``netns.sweep``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from chaos import netns
from chaos.fleet import faketime_library
from tenure.embedded.procfs import pid_alive

FIRST_NODE = 231  # namespaces 231..233: outside the campaign's 1..200 and the hosts test's
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PORT = 5432
REST_PORT = 8008
TTL = 10
LOOP_WAIT = 1
RETRY_TIMEOUT = 4  # loop_wait + 2 * retry_timeout <= ttl, as Patroni requires
REJOIN_S = 30.0  # a node not streaming this long after a fault is copied afresh
ELECTION_S = 3 * TTL  # no new primary this long after a fault: fail over by hand
PACKAGES = ("patroni", "python3-etcd", "etcd-server")


def available() -> str | None:
    """None if a cluster can be made here, else why not (what to install)."""
    reason = netns.available()
    if reason is not None:
        return reason
    missing = [tool for tool in ("patroni", "etcd") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install {' '.join(PACKAGES)})"
    if not faketime_library():
        return "libfaketime not installed (apt-get install faketime)"
    if not (PG_BIN / "postgres").exists():
        return f"PostgreSQL 15 binaries not found in {PG_BIN}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    name: str
    namespace: netns.Namespace
    root: Path
    process: subprocess.Popen[bytes] | None = None
    log: Any = None
    clock_offset: float = 0.0  # seconds this node's clock (Patroni's, PostgreSQL's) is off

    @property
    def address(self) -> str:
        return self.namespace.ns_addr

    @property
    def dsn(self) -> str:
        """This node alone (whatever its role now)."""
        return f"host={self.address} port={PG_PORT} user=postgres dbname=postgres"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def rest(self, path: str, body: dict[str, Any] | None = None, timeout: float = 2.0) -> Any:
        """Patroni's REST API on this node: GET, or POST ``body``."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://{self.address}:{REST_PORT}{path}",
            data=data,
            headers={"Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            text = answer.read().decode()
        try:
            return json.loads(text)
        except ValueError:
            return text

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


@dataclass
class Cluster:
    root: Path
    synchronous: bool = True
    skew: float = 0.0  # node2's clock runs this many seconds ahead, node3's behind
    size: int = 3
    first: int = FIRST_NODE
    nodes: list[Node] = field(default_factory=list)
    etcd: subprocess.Popen[bytes] | None = None
    haproxy: subprocess.Popen[bytes] | None = None
    rebuilt: list[str] = field(default_factory=list)  # nodes copied afresh to rejoin
    replication: str = ""  # what the primary's pg_stat_replication said last
    forced: list[str] = field(default_factory=list)  # manual failovers to these nodes
    behind: list[Node] = field(default_factory=list)  # standbys not streaming, caught up
    _forwarding: str | None = None

    # -- life -------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        """Make the namespaces, start etcd and every node; return once the cluster
        has a primary and every standby streams from it."""
        netns.sweep()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)  # the postgres user reaches its node's directory
        forward = Path("/proc/sys/net/ipv4/ip_forward")
        self._forwarding = forward.read_text().strip()
        forward.write_text("1")
        try:
            for i in range(self.size):
                ns = netns.Namespace(self.first + i)
                subprocess.run(
                    ["ip", "-n", ns.name, "route", "add", "default", "via", ns.host_addr],
                    check=True,
                    capture_output=True,
                )
                node_root = self.root / f"node{i + 1}"
                node_root.mkdir(parents=True, exist_ok=True)
                offset = (0.0, self.skew, -self.skew)[i % 3]
                self.nodes.append(Node(f"node{i + 1}", ns, node_root, clock_offset=offset))
            self._start_etcd()
            for node in self.nodes:
                self._write_config(node)
                self.start_node(node)
            self.wait_healthy(timeout)
        except BaseException:
            self.close(keep_files=True)  # the logs say why
            raise

    def _start_etcd(self) -> None:
        client, peer = _free_port(), _free_port()
        self.etcd_port = client
        listen = [f"http://127.0.0.1:{client}"] + [
            f"http://{n.namespace.host_addr}:{client}" for n in self.nodes
        ]
        data = self.root / "etcd"
        self._etcd_log = open(self.root / "etcd.log", "ab")  # noqa: SIM115
        self.etcd = subprocess.Popen(
            [
                "etcd",
                "--name=tenure-ha",
                f"--data-dir={data}",
                f"--listen-client-urls={','.join(listen)}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=tenure-ha=http://127.0.0.1:{peer}",
                "--enable-v2=false",
            ],
            stdout=self._etcd_log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{client}/version", timeout=1),
            ):
                return
            time.sleep(0.2)
        raise RuntimeError(f"etcd did not start; see {self.root / 'etcd.log'}")

    def _write_config(self, node: Node) -> None:
        net = f"{netns.NET}.0.0/16"
        parameters = {
            "unix_socket_directories": str(node.root),
            "wal_level": "replica",
            "hot_standby": "on",
            "wal_log_hints": "on",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "wal_keep_size": "256MB",
            "max_connections": 200,
            "shared_buffers": "128MB",
            "fsync": "on",
        }
        config = {
            "scope": "tenure-ha",
            "name": node.name,
            "log": {"level": "INFO", "dir": str(node.root)},
            "restapi": {
                "listen": f"{node.address}:{REST_PORT}",
                "connect_address": f"{node.address}:{REST_PORT}",
            },
            # etcd advertises its loopback address, which a namespace cannot reach:
            # take the address given as the way in, without discovering others
            "etcd3": {
                "host": f"{node.namespace.host_addr}:{self.etcd_port}",
                "use_proxies": True,
            },
            "bootstrap": {
                "dcs": {
                    "ttl": TTL,
                    "loop_wait": LOOP_WAIT,
                    "retry_timeout": RETRY_TIMEOUT,
                    "maximum_lag_on_failover": 16 * 1024 * 1024,
                    "synchronous_mode": self.synchronous,
                    "synchronous_node_count": 1,
                    "postgresql": {
                        "use_pg_rewind": True,
                        "use_slots": True,
                        "parameters": parameters,
                    },
                },
                "initdb": ["auth=trust", "encoding=UTF8"],
                "pg_hba": [
                    "local all all trust",
                    "host all all 127.0.0.1/32 trust",
                    f"host all all {net} trust",
                    "local replication all trust",
                    f"host replication all {net} trust",
                ],
            },
            "postgresql": {
                "listen": f"{node.address}:{PG_PORT}",
                "connect_address": f"{node.address}:{PG_PORT}",
                "data_dir": str(node.data_dir),
                # an old primary pg_rewind cannot bring back is copied afresh
                "remove_data_directory_on_rewind_failure": True,
                "remove_data_directory_on_diverged_timelines": True,
                "bin_dir": str(PG_BIN),
                "pgpass": str(node.root / "pgpass"),
                "authentication": {
                    "superuser": {"username": "postgres"},
                    "replication": {"username": "postgres"},
                    "rewind": {"username": "postgres"},
                },
                "parameters": parameters,
                # a new standby's copy starts at once, not after a spread checkpoint
                "basebackup": [{"checkpoint": "fast"}],
                "pg_hba": [
                    "local all all trust",
                    f"host all all {net} trust",
                    "local replication all trust",
                    f"host replication all {net} trust",
                ],
            },
        }
        (node.root / "patroni.yml").write_text(json.dumps(config, indent=1))  # JSON is YAML
        shutil.chown(node.root, "postgres", "postgres")
        for path in node.root.iterdir():
            shutil.chown(path, "postgres", "postgres")

    def start_node(self, node: Node) -> None:
        """Start the node's Patroni (it starts PostgreSQL, as primary or standby)."""
        node.log = open(node.root / "patroni.out", "ab")  # noqa: SIM115
        env = dict(os.environ)
        if node.clock_offset:
            # libfaketime in Patroni, and so in the PostgreSQL it starts: now() is off
            env.update(LD_PRELOAD=faketime_library(), FAKETIME=f"{node.clock_offset:+g}")
        node.process = subprocess.Popen(
            node.namespace.command(
                ["runuser", "-u", "postgres", "--", "patroni", str(node.root / "patroni.yml")]
            ),
            env=env,
            stdout=node.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def close(self, keep_files: bool = False) -> None:
        for node in self.nodes:
            self._kill_node(node)
            node.namespace.remove()
        if self.haproxy is not None:
            self.haproxy.kill()
            self.haproxy.wait(10)
            self.haproxy = None
        if self.etcd is not None:
            self.etcd.kill()
            self.etcd.wait(10)
            self.etcd = None
        if self._forwarding is not None:
            # another cluster of this module still running needs forwarding on
            others = subprocess.run(
                ["ip", "-o", "netns", "list"], capture_output=True, text=True, check=False
            ).stdout
            if netns.PREFIX not in others:
                Path("/proc/sys/net/ipv4/ip_forward").write_text(self._forwarding)
            self._forwarding = None
        self.nodes = []
        if not keep_files:
            shutil.rmtree(self.root, ignore_errors=True)

    def rebuild(self, node: Node) -> None:
        """What an operator does with a standby that will not rejoin: stop its Patroni
        and every PostgreSQL process of its data directory, delete the data, start
        Patroni again (it copies the primary with pg_basebackup)."""
        self._kill_node(node)
        subprocess.run(["pkill", "-KILL", "-f", "--", f"-D {node.data_dir}"], check=False)
        deadline = time.monotonic() + 10
        while (
            time.monotonic() < deadline
            and subprocess.run(
                ["pgrep", "-f", "--", f"-D {node.data_dir}"], capture_output=True, check=False
            ).stdout.strip()
        ):
            time.sleep(0.1)
        shutil.rmtree(node.data_dir, ignore_errors=True)
        self.rebuilt.append(node.name)
        self.start_node(node)

    def _kill_node(self, node: Node) -> None:
        pid = node.postmaster_pid()
        if node.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(10)
            node.process = None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # the backends notice their postmaster is gone and exit; wait for the port
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid is not None and pid_alive(pid):
            time.sleep(0.05)

    def start_haproxy(self) -> str:
        """A HAProxy on loopback that forwards to whichever node Patroni's REST API
        calls primary (``GET /primary`` answers 200 on it alone), closing the sessions
        of a node marked down; the DSN that reaches the cluster through it."""
        port = _free_port()
        servers = "\n".join(
            f"    server {n.name} {n.address}:{PG_PORT} check port {REST_PORT}" for n in self.nodes
        )
        config = f"""global
    maxconn 2000
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 1s
listen postgres
    bind 127.0.0.1:{port}
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
{servers}
"""
        path = self.root / "haproxy.cfg"
        path.write_text(config)
        self._haproxy_log = open(self.root / "haproxy.log", "ab")  # noqa: SIM115
        self.haproxy = subprocess.Popen(
            ["haproxy", "-db", "-f", str(path)],
            stdout=self._haproxy_log,
            stderr=subprocess.STDOUT,
        )
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2"
        # HAProxy starts with every server up until its checks say otherwise: wait
        # until ten connections in a row reach the primary alone
        deadline, in_a_row = time.monotonic() + 30, 0
        while time.monotonic() < deadline and in_a_row < 10:
            try:
                with psycopg.connect(dsn, autocommit=True) as c:
                    row = c.execute("SELECT pg_is_in_recovery()").fetchone()
                in_a_row = in_a_row + 1 if row == (False,) else 0
            except psycopg.Error:
                in_a_row = 0
            time.sleep(0.1)
        if in_a_row < 10:
            raise RuntimeError(
                f"HAProxy did not settle on the primary; see {self.root / 'haproxy.log'}"
            )
        return dsn

    # -- what clients see ---------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """A multi-host DSN over every node; libpq picks the primary."""
        hosts = ",".join(n.address for n in self.nodes)
        ports = ",".join(str(PG_PORT) for _ in self.nodes)
        return f"host={hosts} port={ports} user=postgres dbname={dbname} connect_timeout=2"

    def members(self) -> list[dict[str, Any]]:
        """Patroni's view of the cluster, from the first node that answers."""
        for node in self.nodes:
            with contextlib.suppress(OSError, ValueError):
                answer = node.rest("/cluster")
                if isinstance(answer, dict):
                    return list(answer.get("members", []))
        return []

    def primary(self) -> Node | None:
        """The node Patroni calls leader and that runs, or None during a failover."""
        for member in self.members():
            if member.get("role") == "leader" and member.get("state") == "running":
                return self.node(member["name"])
        return None

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def wait_healthy(self, timeout: float = 90.0) -> Node:
        """Wait until there is a primary and every other node streams from it, caught
        up (and, in synchronous mode, one of them is the synchronous standby): only then
        can the next fault lose nothing acknowledged that replication promises."""
        start = time.monotonic()
        deadline, rebuilt = start + timeout, False
        while time.monotonic() < deadline:
            primary = self.primary()
            if primary is not None and self._streaming(primary):
                return primary
            if primary is not None and not rebuilt and time.monotonic() - start > REJOIN_S:
                # Patroni left a node behind (a rewind that raced its own restart, WAL
                # of its own past the new primary's): have it copy the primary afresh,
                # as an operator would
                for node in self.behind:
                    self.rebuild(node)
                rebuilt = True
            time.sleep(0.3)
        raise RuntimeError(
            f"cluster not healthy after {timeout:g}s: {self.members()}; replication "
            f"{self.replication}; logs in {self.root}"
        )

    def _streaming(self, primary: Node) -> bool:
        """Whether every standby streams from ``primary`` and has replayed nearly all
        it wrote (within a megabyte: under a stream of writes never all of it)."""
        query = (
            "SELECT application_name, state, sync_state,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) FROM pg_stat_replication"
        )
        try:
            with psycopg.connect(
                primary.dsn,
                connect_timeout=2,
                autocommit=True,
            ) as conn:
                rows = conn.execute(query).fetchall()
        except psycopg.Error as exc:
            self.replication = f"{primary.name}: {exc}"
            return False
        self.replication = f"{primary.name}: {rows}"
        caught_up = {r[0] for r in rows if r[1] == "streaming" and (r[3] or 0) < 1 << 20}
        self.behind = [n for n in self.nodes if n is not primary and n.name not in caught_up]
        if self.behind:
            return False
        if not self.synchronous:
            return True
        # Patroni lets only the standby its /sync key names take over, and writes that
        # key a moment after PostgreSQL made the standby synchronous: wait for both
        named = {m.get("name") for m in self.members() if m.get("role") == "sync_standby"}
        return any(r[2] in ("sync", "quorum") and r[0] in named for r in rows)

    def wait_new_primary(self, old: Node, timeout: float = 60.0) -> tuple[Node, float]:
        """Wait until a node other than ``old`` is primary and accepts writes; it and
        the time (``time.time()``) it was first seen so."""
        start = time.monotonic()
        deadline, forced = start + timeout, False
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node is old:
                    continue
                with contextlib.suppress(OSError, ValueError):
                    # /primary answers 200 only on the leader that runs read-write
                    node.rest("/primary", timeout=0.5)
                    return node, time.time()
            if not forced and time.monotonic() - start > ELECTION_S:
                # the standbys each found the other healthier and none took over:
                # an operator's manual failover to one of them
                forced = True
                for node in self.nodes:
                    if node is not old:
                        with contextlib.suppress(OSError, ValueError):
                            node.rest("/failover", {"candidate": node.name}, timeout=10)
                            self.forced.append(node.name)
                            break
            time.sleep(0.05)
        raise RuntimeError(f"no new primary after {timeout:g}s: {self.members()}")

    # -- faults -----------------------------------------------------------------------

    def crash(self, node: Node) -> None:
        """The node's machine dies: SIGKILL to its Patroni and its postmaster."""
        self._kill_node(node)

    def cut(self, node: Node) -> None:
        """Cut the node off from etcd, the other nodes and every client."""
        node.namespace.cut()

    def switchover(self, node: Node, timeout: float = 30.0) -> None:
        """A planned switchover away from ``node`` (the primary) to a standby Patroni
        accepts (in synchronous mode, the synchronous one). Patroni refuses (412) while
        its own view of the standbys has not caught up with theirs: ask again."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                node.rest("/switchover", {"leader": node.name}, timeout=30)
                return
            except urllib.error.HTTPError as exc:
                reason = exc.read().decode(errors="replace").strip()
                if exc.code != 412 or time.monotonic() > deadline:
                    raise RuntimeError(f"Patroni refused the switchover: {reason}") from exc
            time.sleep(0.5)

    def heal(self, node: Node) -> None:
        """Bring ``node`` back after a fault: its link up, its Patroni started if it
        was killed; it rejoins as a standby."""
        node.namespace.restore()
        if node.process is None or node.process.poll() is not None:
            self.start_node(node)
