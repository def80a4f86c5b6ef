"""``bench/netem.py``'s parts that run outside tenure's environment: the network
(namespace, veth pair, delay; ``Link``), the forwarder on the host end of the veth (this
file's ``_forward`` command, one process per forwarder), and the peers' probe senders and
Celery probe worker (the ``_peer`` command, run by the peers' own Pythons,
``bench/.peers/<name>/``). What they are and why: ``bench/netem.py``'s docstring.

Standard library only at the top level: the peers' Pythons and the forwarder import
nothing of tenure's environment.
"""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "tnnetem"
NET = "10.214"
OWNER = "tenure-owner="
PG_PORT = 15432  # forwarders listen on the host end of the veth only
REDIS_PORT = 16379


# -- the network -----------------------------------------------------------------------------


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=15)


def _owner_alive(pid: int, start: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return int(stat.rsplit(")", 1)[1].split()[19]) == start


def _start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def sweep() -> None:
    """Remove namespaces and veths of this module whose maker is gone (a run killed
    before its cleanup); never those of a run still alive."""
    owners: dict[str, tuple[int, int] | None] = {}
    for line in _run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        parts = line.split(":")
        name = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        if re.fullmatch(r"tnm\d+h", name):
            found = re.search(rf"alias {OWNER}(\d+):(\d+)", line)
            owners[name] = (int(found.group(1)), int(found.group(2))) if found else None
    for line in _run(["ip", "netns", "list"], check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not re.fullmatch(rf"{PREFIX}\d+", name):
            continue
        owner = owners.pop(f"tnm{name[len(PREFIX) :]}h", None)
        if owner is not None and _owner_alive(*owner):
            continue
        if owner is None and _run(["ip", "netns", "pids", name], check=False).stdout.strip():
            continue
        _run(["ip", "netns", "del", name], check=False)
    for link, owner in owners.items():
        if owner is None or not _owner_alive(*owner):
            _run(["ip", "link", "del", link], check=False)


class Link:
    """Namespace ``tnnetem<n>`` and its veth pair, the forwarders on the host end, and
    the delay: netem on both veth ends where the kernel has it, else in the forwarders."""

    def __init__(self) -> None:
        sweep()
        spaces = {
            ln.split()[0]
            for ln in _run(["ip", "netns", "list"], check=False).stdout.splitlines()
            if ln.split()
        }
        shown = _run(["ip", "-o", "link", "show"], check=False).stdout
        links = set(re.findall(r"^\d+: ([^:@]+)", shown, re.M))
        free = [
            n for n in range(1, 251) if f"{PREFIX}{n}" not in spaces and f"tnm{n}h" not in links
        ]
        if not free:
            raise RuntimeError("no free namespace number in 1..250")
        n = free[0]
        self.n = n
        self.name = f"{PREFIX}{n}"
        self.host_if, self.ns_if = f"tnm{n}h", f"tnm{n}n"
        self.host_addr, self.ns_addr = f"{NET}.{n}.1", f"{NET}.{n}.2"
        self.forwarders: list[subprocess.Popen[bytes]] = []
        self.rtt_ms = 0.0
        self.netem = False
        try:
            ip = ["ip"]
            _run([*ip, "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if])
            owner = f"{OWNER}{os.getpid()}:{_start_time(os.getpid())}"
            _run([*ip, "link", "set", self.host_if, "alias", owner])
            _run([*ip, "netns", "add", self.name])
            _run([*ip, "link", "set", self.ns_if, "netns", self.name])
            _run([*ip, "addr", "add", f"{self.host_addr}/30", "dev", self.host_if])
            _run([*ip, "link", "set", self.host_if, "up"])
            _run([*ip, "-n", self.name, "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if])
            _run([*ip, "-n", self.name, "link", "set", self.ns_if, "up"])
            _run([*ip, "-n", self.name, "link", "set", "lo", "up"])
            try:
                self._netem("add", "0ms")
                self.netem = True
            except subprocess.CalledProcessError:
                pass  # no sch_netem in this kernel: the forwarders delay instead
            self._start_forwarders(0.0)
        except BaseException:
            self.remove()
            raise

    @property
    def placement(self) -> str:
        if self.netem:
            return "tc netem on both veth ends, each delaying its egress by half the round trip"
        return (
            "no sch_netem in this kernel (CONFIG_NET_SCH_NETEM unset): the forwarder on "
            "the host end of the veth delays every chunk it relays by half the round trip, "
            "in each direction, order kept (a fixed one-way delay, as netem delay is)"
        )

    def _start_forwarders(self, one_way: float) -> None:
        for port, target in ((PG_PORT, "127.0.0.1:5432"), (REDIS_PORT, "127.0.0.1:6379")):
            argv = [sys.executable, __file__, "_forward", self.host_addr, str(port), target]
            self.forwarders.append(
                subprocess.Popen(
                    [*argv, f"{one_way:.6f}"],
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 10
        for port in (PG_PORT, REDIS_PORT):
            while True:
                try:
                    socket.create_connection((self.host_addr, port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"forwarder on {self.host_addr}:{port} not up") from None
                    time.sleep(0.05)

    def _stop_forwarders(self) -> None:
        for proc in self.forwarders:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.forwarders.clear()

    def set_rtt(self, rtt_ms: float) -> None:
        """Delay each direction by half of ``rtt_ms`` (between fleets: no worker is
        connected, so restarting the forwarders breaks nothing)."""
        if self.netem:
            self._netem("change", f"{rtt_ms / 2:g}ms")
        else:
            self._stop_forwarders()
            self._start_forwarders(rtt_ms / 2000)
        self.rtt_ms = rtt_ms

    def _netem(self, verb: str, delay: str) -> None:
        """The root qdisc of both veth ends: netem delaying egress by ``delay``."""
        netem = ["root", "netem", "delay", delay, "limit", "100000"]
        _run(["tc", "qdisc", verb, "dev", self.host_if, *netem])
        _run(["ip", "netns", "exec", self.name, "tc", "qdisc", verb, "dev", self.ns_if, *netem])

    def statement_rtt_ms(self, count: int = 50) -> float | None:
        """The median time of ``SELECT 1`` from inside the namespace, through the
        forwarder: the round trip every statement of a worker pays."""
        code = (
            "import psycopg,time,statistics,sys;c=psycopg.connect(sys.argv[1]);t=[]\n"
            f"for _ in range({count}):\n"
            " a=time.perf_counter();c.execute('SELECT 1').fetchone();"
            "t.append(time.perf_counter()-a)\n"
            "print(statistics.median(t)*1e3)"
        )
        out = _run(self.command([sys.executable, "-c", code, self.pg_dsn()]), check=False)
        try:
            return float(out.stdout.strip())
        except ValueError:
            return None

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def pg_dsn(self, dbname: str = "test") -> str:
        return f"postgresql://postgres@{self.host_addr}:{PG_PORT}/{dbname}"

    def redis_url(self) -> str:
        return f"redis://{self.host_addr}:{REDIS_PORT}/15"

    def remove(self) -> None:
        """Stop the forwarders, then delete the namespace and the veth (its qdiscs go
        with the devices)."""
        self._stop_forwarders()
        _run(["ip", "link", "del", self.host_if], check=False)
        _run(["ip", "netns", "del", self.name], check=False)


# -- the forwarder (its own process: python bench/netlink.py _forward HOST PORT TARGET DELAY)


def _forward_main(host: str, port: int, target: str, one_way: float) -> int:
    """Relay ``host:port`` to ``target``; every chunk read is written to the other side
    ``one_way`` seconds later, order kept. The loop waits in select(), whose timeout
    has microsecond resolution (epoll's is a millisecond, too coarse for 0.5 ms)."""
    try:  # wake within a microsecond of a timer, not the default 50 µs slack
        import ctypes

        ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK, 1 ns
    except (OSError, AttributeError):
        pass
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    asyncio.set_event_loop(loop)
    t_host, _, t_port = target.rpartition(":")

    class Side(asyncio.Protocol):
        def __init__(self) -> None:
            self.transport: asyncio.Transport | None = None
            self.other: Side | None = None
            self.queue: deque[tuple[float, bytes]] = deque()
            self.timer: asyncio.TimerHandle | None = None
            self.lost = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            other = self.other
            if one_way <= 0 and not self.queue and other is not None and other.transport:
                other.transport.write(data)
                return
            self.queue.append((loop.time() + one_way, data))
            if self.timer is None:
                self.timer = loop.call_at(self.queue[0][0], self.flush)

        def flush(self) -> None:
            self.timer = None
            other = self.other
            if other is None or other.transport is None:
                self.timer = loop.call_later(0.001, self.flush)  # target not connected yet
                return
            now = loop.time()
            while self.queue and self.queue[0][0] <= now:
                other.transport.write(self.queue.popleft()[1])
            if self.queue:
                self.timer = loop.call_at(self.queue[0][0], self.flush)
            elif self.lost:
                other.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self.lost = True
            other = self.other
            if not self.queue and other is not None and other.transport is not None:
                other.transport.close()

    async def connect(client: Side) -> None:
        server = Side()
        server.other, client.other = client, server
        try:
            await loop.create_connection(lambda: server, t_host, int(t_port))
        except OSError:
            if client.transport is not None:
                client.transport.close()

    def accept() -> Side:
        client = Side()
        loop.create_task(connect(client))
        return client

    async def serve() -> None:
        server = await loop.create_server(accept, host, port, reuse_address=True, backlog=256)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        server.close()

    loop.run_until_complete(serve())
    return 0


# -- the bench (tenure's environment) --------------------------------------------------------
# -- the peers' side (run by a peer's own Python; standard library plus that peer) ----------


def _peer_main(argv: list[str]) -> int:
    """``_peer probe NAME TARGET N GAP [LOG]`` sends N probes GAP s apart;
    ``_peer worker celery URL 0 0 LOG`` runs a Celery worker whose probe task logs
    ``<sent> <started>`` (wall clock) per start."""
    action, name, target, n, gap = argv[:5]
    log = argv[5] if len(argv) > 5 else ""
    sys.path.insert(0, str(ROOT / "bench" / "peers"))
    if name == "celery":
        app = _celery_app(target, log)
        if action == "worker":
            app.worker_main(["worker", "--pool", "solo", "--loglevel", "WARNING"])
            return 0
        probe = app.tasks["netem_probe"]
        for _ in range(int(n)):
            probe.apply_async(args=[time.time()])
            time.sleep(float(gap))
        return 0
    asyncio.run(_pg_probes(name, target, int(n), float(gap)))
    return 0


def _celery_app(url: str, log: str) -> Any:
    from celery_adapter import make_app  # type: ignore[import-not-found]

    app = make_app(url)

    @app.task(name="netem_probe")  # type: ignore[untyped-decorator]
    def netem_probe(sent: float) -> None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{sent:.6f} {time.time():.6f}\n".encode())
        finally:
            os.close(fd)

    return app


async def _pg_probes(name: str, dsn: str, n: int, gap: float) -> None:
    if name == "pgqueuer":
        import asyncpg  # type: ignore[import-not-found]
        from pgqueuer import AsyncpgDriver, Queries  # type: ignore[import-not-found]

        conn = await asyncpg.connect(dsn)
        try:
            queries = Queries(AsyncpgDriver(conn))
            for _ in range(n):
                await queries.enqueue("noop", None)
                await asyncio.sleep(gap)
        finally:
            await conn.close()
        return
    from procrastinate_adapter import make_app  # type: ignore[import-not-found]

    app = make_app(dsn)
    async with app.open_async():
        for _ in range(n):
            await app.tasks["noop"].defer_async()
            await asyncio.sleep(gap)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_peer":
        return _peer_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "_forward":
        host, port, target, delay = sys.argv[2:6]
        return _forward_main(host, int(port), target, float(delay))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
