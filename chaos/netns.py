"""A real network partition: a worker in its own network namespace behind a veth pair.

Rules:
- Namespaces are named ``tnchaos<N>``, veths ``tcv<N>h`` (host end, 10.213.N.1/30) and
  ``tcv<N>n`` (inside, 10.213.N.2/30). Only addresses inside namespaces made here are
  used; traffic goes to the host end of the veth, where a proxy forwards to the database.
- ``cut()`` sets the host end down, ``restore()`` sets it up again: the worker keeps
  running, its TCP connections stall and resume, so late writes do arrive late.
- ``remove()`` deletes the namespace and the veth; ``sweep()`` removes leftovers of an
  earlier run killed before it could clean up. Both are idempotent.
"""

from __future__ import annotations

import shutil
import subprocess

PREFIX = "tnchaos"
NET = "10.213"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=15)


def available() -> str | None:
    """None if namespaces can be made here, else why not."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"{PREFIX}probe"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace: {done.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def sweep() -> None:
    """Remove every namespace and veth this module could have left behind."""
    done = _ip("-o", "netns", "list", check=False)
    for line in done.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            _ip("netns", "del", name, check=False)
    links = _ip("-o", "link", "show", check=False).stdout
    for line in links.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith("tcv") and name.endswith("h"):
                _ip("link", "del", name, check=False)


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
            _ip("netns", "add", self.name)
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
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
