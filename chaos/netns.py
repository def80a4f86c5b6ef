"""A real network partition: a worker in its own network namespace behind a veth pair.

Rules:
- Namespaces are named ``tnchaos<N>``, veths ``tcv<N>h`` (host end, 10.213.N.1/30) and
  ``tcv<N>n`` (inside, 10.213.N.2/30). Only addresses inside namespaces made here are
  used; traffic goes to the host end of the veth, where a proxy forwards to the database.
  A :class:`Host` is a namespace with that proxy: what a machine of a fleet looks like.
- ``cut()`` sets the host end down, ``restore()`` sets it up again: the worker keeps
  running, its TCP connections stall and resume, so late writes do arrive late.
- The host end of each veth names the process that made it (``alias
  tenure-owner=PID:START``, START its start time, so a reused pid does not count).
  ``remove()`` deletes the namespace and the veth; ``sweep()`` removes leftovers of an
  earlier run killed before it could clean up, never those of a run still alive (one
  without an owner counts as alive while a process runs inside it). Both are idempotent.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from chaos.proxy import Proxy
from tenure.embedded.procfs import pid_alive, process_start

PREFIX = "tnchaos"
NET = "10.213"
OWNER = "tenure-owner="


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=15)


def available() -> str | None:
    """None if namespaces can be made here, else why not."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"{PREFIX}probe{os.getpid()}"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def sweep() -> None:
    """Remove every namespace and veth this module left behind in a run that is gone."""
    owners: dict[str, tuple[int, int] | None] = {}  # host-end veth -> its maker (pid, start)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        name = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        if name.startswith("tcv") and name.endswith("h"):
            found = re.search(rf"alias {OWNER}(\d+):(\d+)", line)
            owners[name] = (int(found.group(1)), int(found.group(2))) if found else None
    for line in _ip("-o", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        owner = owners.pop(f"tcv{name[len(PREFIX) :]}h", None)
        in_use = _ip("netns", "pids", name, check=False).stdout.strip()
        if (owner is not None and pid_alive(*owner)) or (owner is None and in_use):
            continue
        _ip("netns", "del", name, check=False)
    for link, owner in owners.items():  # veths whose namespace is already gone
        if owner is None or not pid_alive(*owner):
            _ip("link", "del", link, check=False)


class Namespace:
    """Namespace number ``n`` (1..250) with its veth pair, made on construction."""

    def __init__(self, n: int) -> None:
        if not 1 <= n <= 250:
            raise ValueError("namespace number must be in 1..250")
        self.n = n
        self.name = f"{PREFIX}{n}"
        self.host_if = f"tcv{n}h"
        self.ns_if = f"tcv{n}n"
        self.host_addr = f"{NET}.{n}.1"
        self.ns_addr = f"{NET}.{n}.2"
        self.remove()
        try:
            # The veth (with its owner) first: a sweep never sees an ownerless namespace.
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            owner = f"{OWNER}{os.getpid()}:{process_start(os.getpid())}"
            _ip("link", "set", self.host_if, "alias", owner)
            _ip("netns", "add", self.name)
            _ip("link", "set", self.ns_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.name, "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if)
            _ip("-n", self.name, "link", "set", self.ns_if, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def remove(self) -> None:
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.name, check=False)


def database_address(dsn: str) -> str:
    """Where ``dsn``'s server listens, as a :class:`Proxy` target: a unix socket path
    or ``host:port``."""
    info = conninfo_to_dict(dsn)
    host = str(info.get("hostaddr") or info.get("host") or "/var/run/postgresql")
    port = str(info.get("port") or "5432")
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"


class Host:
    """A machine of a test fleet: namespace ``n`` whose processes reach the database of
    ``dsn`` through a proxy on the host end of its veth, at ``self.dsn``."""

    def __init__(self, n: int, dsn: str, seed: int = 0) -> None:
        self.namespace = Namespace(n)
        try:
            self.proxy = Proxy(
                database_address(dsn), listen_host=self.namespace.host_addr, seed=seed
            )
        except BaseException:
            self.namespace.remove()
            raise
        info = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "hostaddr"}
        info.update(host=self.namespace.host_addr, port=str(self.proxy.port))
        self.dsn = make_conninfo("", **info)

    def remove(self) -> None:
        """Close the proxy, then delete the namespace and its veth."""
        self.proxy.close()
        self.namespace.remove()
