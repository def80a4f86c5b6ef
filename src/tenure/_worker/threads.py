"""A pool of daemon threads for sync tasks.

Daemon threads, unlike ``ThreadPoolExecutor``'s, do not hold the process open at
exit: a draining worker that handed a stuck task back can still exit on time.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPool(Executor):
    """Up to ``size`` daemon threads, started on demand.

    A job the worker gave up on (timed out, lease lost) keeps its thread until the
    function returns; :meth:`abandon` lets the pool start one more thread meanwhile,
    so abandoned work never starves the tasks that replaced it.
    """

    def __init__(self, size: int, name: str = "tenure-task") -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._abandoned = 0
        self._lock = threading.Lock()
        self._closed = False

    def abandon(self, future: Future[Any]) -> None:
        """Stop counting ``future``'s thread against the pool until the job returns."""
        if future.done():
            return
        with self._lock:
            self._abandoned += 1
        future.add_done_callback(self._returned)

    def _returned(self, _: Future[Any]) -> None:
        with self._lock:
            self._abandoned -= 1

    @property
    def abandoned(self) -> int:
        return self._abandoned

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("pool is shut down")
            self._jobs.put((future, fn, args, kwargs))
            if self._idle == 0 and len(self._threads) < self._size + self._abandoned:
                thread = threading.Thread(
                    target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1 if self._idle > 0 else 0
        return future

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args, kwargs = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # handed to the awaiting coroutine
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()
