"""The worker's HTTP surfaces: ``/metrics``, ``/livez`` and ``/readyz``.

Rules:
- A tiny asyncio server on the worker's own event loop, standard library only; it
  starts before the worker connects (so ``/livez`` answers during start-up) and
  stops after the worker drained.
- ``--metrics-port`` serves ``/metrics``; ``--health-port`` serves ``/livez`` and
  ``/readyz``; one server serves all three when both ports are the same.
- ``/livez`` is 200 whenever the event loop answers. ``/readyz`` is 200 once the
  worker is registered and claiming, 503 while it starts, drains or is self-fenced.
- Only GET and HEAD; nothing here reads a request body or writes to the database.
- Bound to a loopback address, a request whose ``Host`` is not a loopback name is
  refused (403), so a page elsewhere cannot read queue and task names by DNS
  rebinding. Bound beyond loopback (a pod's 0.0.0.0, probed at the pod's IP), any
  ``Host`` is served.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from tenure._untrusted import is_loopback, is_loopback_host_header
from tenure._worker.metrics import Metrics
from tenure._worker.status import WorkerStatus
from tenure.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
READ_TIMEOUT = 5.0
MAX_HEADER_BYTES = 16 * 1024
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class SurfacesConfig:
    """Where the worker serves metrics and health checks (None: not served)."""

    metrics_port: int | None = None
    health_port: int | None = None
    host: str = DEFAULT_HOST

    def __post_init__(self) -> None:
        for name in ("metrics_port", "health_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port <= 65535:
                raise ConfigError(f"{name}: must be between 0 and 65535, got {port}")

    def routes_by_port(self) -> dict[int, set[str]]:
        ports: dict[int, set[str]] = {}
        if self.metrics_port is not None:
            ports.setdefault(self.metrics_port, set()).add("/metrics")
        if self.health_port is not None:
            ports.setdefault(self.health_port, set()).update({"/livez", "/readyz"})
        return ports


class Surfaces:
    """The running servers of one worker; :meth:`stop` closes them. They read the
    worker through ``status`` (a fresh snapshot per request) and ``metrics``."""

    def __init__(
        self,
        config: SurfacesConfig | None,
        status: Callable[[], WorkerStatus],
        metrics: Metrics,
    ) -> None:
        self.status = status
        self.metrics = metrics
        self.config = config or SurfacesConfig()
        self.servers: list[asyncio.Server] = []
        self.ports: dict[str, int] = {}  # path -> bound port (useful with port 0)

    async def start(self) -> Surfaces:
        for port, routes in self.config.routes_by_port().items():

            async def handle(
                reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter,
                routes: set[str] = routes,
            ) -> None:
                await self._handle(reader, writer, routes)

            server = await asyncio.start_server(handle, self.config.host, port)
            bound = server.sockets[0].getsockname()[1]
            for route in routes:
                self.ports[route] = bound
            self.servers.append(server)
            log.info(
                "worker_http_listening host=%s port=%d paths=%s",
                self.config.host,
                bound,
                ",".join(sorted(routes)),
            )
        return self

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()
        self.servers.clear()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, routes: set[str]
    ) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            if len(head) > MAX_HEADER_BYTES:
                raise ValueError("headers too large")
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, target, _ = request_line.split(" ", 2)
            path = target.split("?", 1)[0]
            if self._foreign_host(head):
                refused = "refused: bound to loopback, this server answers Host: localhost only\n"
                status, body, ctype = 403, refused, "text/plain; charset=utf-8"
            else:
                status, body, ctype = await self._respond(method, path, routes)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        except ValueError:
            status, body, ctype = 400, "bad request\n", "text/plain; charset=utf-8"
        except Exception:
            log.exception("worker_http_failed")
            status, body, ctype = 500, "internal error\n", "text/plain; charset=utf-8"
        payload = body.encode()
        reason = {
            200: "OK",
            400: "Bad Request",
            403: "Forbidden",
            404: "Not Found",
            405: "Method Not Allowed",
        }
        lines = [
            f"HTTP/1.1 {status} {reason.get(status, 'Service Unavailable')}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(payload)}",
            "Cache-Control: no-store",
            "Connection: close",
            "",
            "",
        ]
        writer.write("\r\n".join(lines).encode() + (b"" if head.startswith(b"HEAD ") else payload))
        try:
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _foreign_host(self, head: bytes) -> bool:
        """True when bound to loopback and the request's Host names another host."""
        if not is_loopback(self.config.host):
            return False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"host":
                return not is_loopback_host_header(value.strip().decode("latin-1"))
        return True

    async def _respond(self, method: str, path: str, routes: set[str]) -> tuple[int, str, str]:
        text = "text/plain; charset=utf-8"
        if path not in routes:
            return 404, f"not found; try {', '.join(sorted(routes))}\n", text
        if method not in ("GET", "HEAD"):
            return 405, "only GET and HEAD\n", text
        if path == "/metrics":
            return 200, await self.metrics.render(self.status()), PROMETHEUS_TYPE
        if path == "/livez":
            return 200, "ok\n", text
        ready, why = self.status().readiness()
        return (200 if ready else 503), why + "\n", text
