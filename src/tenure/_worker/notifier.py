"""Notifier: LISTEN on the schema's channel and wake the claimer for our queues.

The same channel carries ``!cancel:<id>`` when an operator cancels a running task,
so the worker that holds it stops it at once instead of at its next heartbeat.

Wake-ups coalesce: many notifications between two claims cause one claim. When the
listening connection breaks it is reopened with backoff; the claimer's poll
interval covers the gap. With ``listen=False`` (connection poolers in transaction
mode) the notifier is not started and polling alone drives claims.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from psycopg import sql

from tenure._db.connect import backoff_delay, describe
from tenure._db.sqlfiles import channel_name
from tenure._worker.link import Link

log = logging.getLogger(__name__)

CANCEL_PREFIX = "!cancel:"  # payload sent by cancel_task() for a running task


class Notifier:
    name = "notifier"

    def __init__(
        self,
        link: Link,
        queues: tuple[str, ...],
        wake: Callable[[], None],
        cancel: Callable[[int], None],
    ) -> None:
        self.link = link
        self.queues = set(queues)
        self.wake = wake
        self.cancel = cancel
        self._task: asyncio.Task[None] | None = None
        self.received = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def _loop(self) -> None:
        failures = 0
        channel = sql.Identifier(channel_name(self.link.schema))
        while True:
            try:
                conn = await self.link.connection()
                await conn.execute(sql.SQL("LISTEN {}").format(channel))
                failures = 0
                self.wake()  # anything sent while we were not listening
                async for note in conn.notifies():
                    self.received += 1
                    if note.payload in self.queues:
                        self.wake()
                    elif note.payload.startswith(CANCEL_PREFIX):
                        self.cancel(int(note.payload[len(CANCEL_PREFIX) :]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning("notifier_failed error=%s", describe(exc))
                await self.link.close()
                await asyncio.sleep(backoff_delay(failures, base=0.2, cap=5.0))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.link.close()
