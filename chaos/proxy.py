"""A small TCP proxy placed between workers and the database, with connection faults.

Rules:
- It listens on a host:port (loopback, or the host end of a test veth) and forwards
  each connection to the database's unix socket or host:port.
- Modes: ``pass``; ``drop`` (every open connection is cut and new ones are closed at
  once); ``blackhole`` (connections are accepted and never answered; bytes in flight
  are held, as a silent network holds them, and delivered when the mode goes back to
  ``pass`` — so late writes do arrive late); ``latency`` (every chunk is delayed by
  ``latency`` plus up to ``jitter`` seconds, order kept).
- The proxy runs its own event loop in a daemon thread; ``set_mode`` is safe from any
  thread. Every wait is bounded; ``close`` stops everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from dataclasses import dataclass, field

MODES = ("pass", "drop", "blackhole", "latency")
CHUNK = 65536


@dataclass(eq=False)
class _Pipe:
    writer_c: asyncio.StreamWriter
    writer_s: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for w in (self.writer_c, self.writer_s):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.transport.abort()
        for t in self.tasks:
            t.cancel()


class Proxy:
    """Forward ``listen_host:listen_port`` to ``target`` (a unix socket path or host:port)."""

    def __init__(
        self, target: str, listen_host: str = "127.0.0.1", listen_port: int = 0, seed: int = 0
    ) -> None:
        self.target = target
        self.listen_host = listen_host
        self.port = listen_port
        self.mode = "pass"
        self.latency = 0.0
        self.jitter = 0.0
        self.connections = 0
        self._rng = random.Random(seed)
        self._pipes: set[_Pipe] = set()
        self._resume = None  # type: asyncio.Event | None
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._start())

    # -- thread-safe control ----------------------------------------------------------

    def _call(self, coro, timeout: float = 10.0):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def set_mode(self, mode: str, latency: float = 0.0, jitter: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"proxy mode must be one of {MODES}, not {mode!r}")
        self._call(self._set_mode(mode, latency, jitter))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def address(self) -> tuple[str, int]:
        return self.listen_host, self.port

    # -- the loop ---------------------------------------------------------------------

    async def _start(self) -> None:
        self._resume = asyncio.Event()
        self._resume.set()
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes):
            pipe.close()
        self._pipes.clear()

    async def _set_mode(self, mode: str, latency: float, jitter: float) -> None:
        assert self._resume is not None
        self.mode, self.latency, self.jitter = mode, latency, jitter
        if mode == "drop":
            for pipe in list(self._pipes):
                pipe.close()
            self._pipes.clear()
        if mode == "blackhole":
            self._resume.clear()
        else:
            self._resume.set()

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.target.startswith("/"):
            return await asyncio.wait_for(asyncio.open_unix_connection(self.target), 5)
        host, _, port = self.target.rpartition(":")
        return await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        pipe = _Pipe(writer)
        if self.mode == "drop":
            pipe.close()
            return
        self._pipes.add(pipe)
        try:
            assert self._resume is not None
            await self._resume.wait()  # blackhole: accepted, never answered
            if pipe not in self._pipes:
                return
            s_reader, s_writer = await self._open_target()
        except (OSError, TimeoutError):
            self._pipes.discard(pipe)
            pipe.close()
            return
        pipe.writer_s = s_writer
        pipe.tasks = [
            asyncio.create_task(self._pump(reader, s_writer, pipe)),
            asyncio.create_task(self._pump(s_reader, writer, pipe)),
        ]

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pipe: _Pipe
    ) -> None:
        assert self._resume is not None
        last_due = 0.0
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                if self.mode == "latency":
                    delay = self.latency + self._rng.uniform(0, self.jitter)
                    due = max(last_due, time.monotonic() + delay)
                    last_due = due
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                await self._resume.wait()  # blackhole: hold the bytes until it lifts
                if pipe not in self._pipes:
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._pipes.discard(pipe)
            pipe.close()
