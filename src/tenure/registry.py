"""The registry: task names, their options and payload types; ``send`` and ``send_many``.

>>> from tenure import Registry
>>> reg = Registry()                                    # doctest: +SKIP
>>> @reg.task(queue="documents", max_concurrency=1)     # doctest: +SKIP
... def parse_document(payload: dict) -> None: ...
>>> parse_document.send({"uri": "file:///tmp/a.pdf"})   # doctest: +SKIP

The payload type comes from the type hint of the task's single parameter (``dict``,
a pydantic model, or any JSON type); it is validated at ``send`` and again in the
worker before the function runs.
"""

from __future__ import annotations

import inspect
import sys
import typing
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, TypeVar, overload

import psycopg
import pydantic
import pydantic_core

from tenure._durations import as_timedelta
from tenure.client import Client
from tenure.errors import AlreadyRegistered, ConfigError, PayloadInvalid, TaskNotFound
from tenure.handle import TaskHandle
from tenure.limits import Limits, not_utf8_at
from tenure.options import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CRASHES,
    DEFAULT_QUEUE,
    Backoff,
    QueueOptions,
    TaskOptions,
)
from tenure.rates import Cost, Rate, Rates, check_cost
from tenure.schedules import DEFAULT_MAX_CATCH_UP, Schedule

P = ParamSpec("P")
R = TypeVar("R")

Duration = timedelta | float | int | str


def _first_line(error: pydantic.ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


class Task(Generic[P, R]):
    """A registered task: call it directly, or ``send`` it to run on a worker."""

    def __init__(self, registry: Registry, fn: Callable[P, R], options: TaskOptions) -> None:
        self.registry = registry
        self.fn = fn
        self.options = options
        self.name = options.name
        self.is_async = inspect.iscoroutinefunction(fn)
        self.payload_type = _payload_type(fn)
        self.result_type = _result_type(fn)
        self._adapter, self._nan_as_null = _adapter(self.payload_type)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.options.queue}>"

    def validate(self, payload: Any, *, label: str = "payload") -> Any:
        """The payload as the function receives it, or :class:`PayloadInvalid`."""
        try:
            return self._adapter.validate_python(payload)
        except pydantic.ValidationError as exc:
            raise self._invalid(label, exc) from None

    def decode(self, text: str | bytes) -> Any:
        """A stored payload (JSON text) as the function receives it, parsed and
        validated in one pass, or :class:`PayloadInvalid`."""
        try:
            return self._adapter.validate_json(text)
        except pydantic.ValidationError as exc:
            raise self._invalid("payload", exc) from None

    def _invalid(self, label: str, exc: pydantic.ValidationError) -> PayloadInvalid:
        return PayloadInvalid(f"{self.name}: {label} invalid: {_first_line(exc)}")

    def encode(self, payload: Any, *, label: str = "payload") -> str:
        """Validate ``payload`` and return it as JSON text, within the registry's
        :class:`Limits` (else :class:`PayloadInvalid`)."""
        return self._encode(self.validate(payload, label=label), label)

    def cost_of(self, value: Any, cost: int | None, partition_key: str | None) -> int:
        """The rate units one start of this (validated) payload spends: the sender's
        ``cost``, else the task's; it must fit in every burst its rates have."""
        o = self.options
        if cost is None:
            cost = o.cost(value) if callable(o.cost) else o.cost
        queue = self.registry.queue_options.get(o.queue)
        for rates in (o.rates, queue.rates if queue is not None else None):
            if rates is not None:
                check_cost(cost, name=self.name, rates=rates, key=partition_key or "")
        return cost

    def _encode(self, value: Any, label: str) -> str:
        try:
            data = self._adapter.dump_json(value)
        except pydantic_core.PydanticSerializationError as exc:
            where = not_utf8_at(value)
            if where is not None:
                raise PayloadInvalid(
                    f"{self.name}: {label}{where} is not valid UTF-8 (a lone surrogate, as "
                    "from a file name decoded with surrogateescape); send it as bytes "
                    "encoded in base64, or decode it with errors='replace'"
                ) from None
            raise PayloadInvalid(f"{self.name}: {label} is not JSON: {exc}") from None
        text = data.decode()
        self.registry.limits.check_payload(
            text, len(data), f"{self.name}: {label}", value, self._nan_as_null
        )
        return text

    def send(
        self,
        payload: Any,
        *,
        priority: int | None = None,
        delay: Duration | None = None,
        run_at: datetime | None = None,
        partition_key: str | None = None,
        idempotency_key: str | None = None,
        connection: psycopg.Connection[Any] | None = None,
        cost: int | None = None,
    ) -> TaskHandle:
        """Enqueue one run of this task.

        Commits before returning, or joins the caller's transaction when
        ``connection`` is given. A repeated ``idempotency_key`` returns the task
        that key created first. ``cost`` overrides the rate units it spends.
        """
        value = self.validate(payload)
        task_id = self.registry.client.send(
            self.options,
            self._encode(value, "payload"),
            priority=priority,
            delay=as_timedelta(delay, field="delay"),
            run_at=run_at,
            partition_key=partition_key,
            idempotency_key=idempotency_key,
            connection=connection,
            cost=self.cost_of(value, cost, partition_key),
        )
        return TaskHandle(task_id, self.registry.client, self.result_type)

    def send_many(
        self,
        payloads: Iterable[Any],
        *,
        priority: int | None = None,
        delay: Duration | None = None,
        run_at: datetime | None = None,
        partition_key: str | None = None,
        connection: psycopg.Connection[Any] | None = None,
        cost: int | None = None,
    ) -> list[TaskHandle]:
        """Enqueue many runs in one round trip. All payloads are validated first:
        if one is invalid, none is sent."""
        values = [self.validate(p, label=f"payload [{i}]") for i, p in enumerate(payloads)]
        encoded = [self._encode(v, f"payload [{i}]") for i, v in enumerate(values)]
        costs = [self.cost_of(v, cost, partition_key) for v in values]
        ids = self.registry.client.send_many(
            self.options,
            encoded,
            priority=priority,
            delay=as_timedelta(delay, field="delay"),
            run_at=run_at,
            partition_key=partition_key,
            connection=connection,
            costs=costs,
        )
        return [TaskHandle(i, self.registry.client, self.result_type) for i in ids]


def default_name(fn: Callable[..., Any]) -> str:
    """``module.qualname``, with the module a worker imports: a module run with
    ``python -m myapp.tasks`` is ``__main__`` to itself but ``myapp.tasks`` to the
    worker that imports it, and the task must have one name in both."""
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if spec is not None and spec.name and spec.name != "__main__":
            module = spec.name
        else:
            warnings.warn(
                f"task {fn.__qualname__} is registered from a script, so it is named "
                f"'__main__.{fn.__qualname__}', a name no worker importing a module "
                "knows: give it name=..., or run the script with python -m",
                stacklevel=4,
            )
    return f"{module}.{fn.__qualname__}"


def _adapter(payload_type: Any) -> tuple[pydantic.TypeAdapter[Any], bool]:
    """The payload's adapter, and whether it writes NaN and infinities as null.

    Where the adapter takes a config it writes them as JSON's missing constants, so
    :meth:`Limits.check_payload` can refuse them; a model, dataclass or TypedDict
    keeps its own config (NaN as null unless it says otherwise)."""
    config = pydantic.ConfigDict(ser_json_inf_nan="constants")
    try:
        return pydantic.TypeAdapter(payload_type, config=config), False
    except pydantic.PydanticUserError:
        return pydantic.TypeAdapter(payload_type), True


def _payload_type(fn: Callable[..., Any]) -> Any:
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) != 1:
        raise ConfigError(
            f"{fn.__qualname__}: a task takes exactly one parameter, its payload "
            f"(found {len(params)})"
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to any JSON
        hints = {}
    return hints.get(params[0].name, Any)


def _result_type(fn: Callable[..., Any]) -> Any:
    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:
        return None
    if hint is None or hint is type(None):
        return None
    origin = typing.get_origin(hint)
    if origin is not None and getattr(origin, "__name__", "") in ("Coroutine", "Awaitable"):
        return None
    return hint


class Registry:
    """The tasks one application can send and run, bound to one database and schema.

    ``dsn`` defaults to ``TENURE_DATABASE_URL``, else the embedded PostgreSQL server;
    ``schema`` to ``TENURE_SCHEMA``, else ``tenure``.
    ``limits`` bounds payloads at ``send`` and results and error texts in the worker
    (payload 1 MB, result 10 MB, error text 8 KB, depth 64 by default).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.client = Client(dsn, schema=schema)
        self.schema = self.client.schema
        self.limits = limits if limits is not None else Limits()
        if not isinstance(self.limits, Limits):
            raise ConfigError("limits: expected a tenure.Limits")
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.queue_options: dict[str, QueueOptions] = {}
        self.schedules: dict[str, Schedule] = {}

    def queue(
        self,
        name: str,
        *,
        weight: int = 1,
        max_concurrency: int | None = None,
        max_concurrency_per_key: int | None = None,
        key_weights: dict[str, float] | None = None,
        rate: Rate | str | None = None,
        rate_per_key: Rate | str | None = None,
        rate_keys: Mapping[str, Rate | str] | None = None,
    ) -> QueueOptions:
        """Declare a queue's share and limits; workers publish them at start. Rates
        (``"50/s"``, a :class:`Rate` for another burst) are as :meth:`task` takes them.

        >>> reg.queue("documents", max_concurrency=20, max_concurrency_per_key=4)
        ...                                                   # doctest: +SKIP
        """
        options = QueueOptions(
            name=name,
            weight=weight,
            max_concurrency=max_concurrency,
            max_concurrency_per_key=max_concurrency_per_key,
            key_weights=dict(key_weights or {}),
            rates=Rates.build(rate, rate_per_key, rate_keys),
        )
        self.queue_options[name] = options
        return options

    def schedule(
        self,
        task: Task[Any, Any] | str,
        *,
        name: str | None = None,
        cron: str | None = None,
        every: Duration | None = None,
        timezone: str = "UTC",
        payload: Any = None,
        catch_up: str = "latest",
        max_catch_up: int = DEFAULT_MAX_CATCH_UP,
        jitter: Duration | None = None,
        overlap: bool = True,
    ) -> Schedule:
        """Send ``task`` on a schedule; workers publish it at start (one that the code
        no longer declares stops). Checked now, whole: the task, the cron expression or
        interval, the timezone and the payload.

        ``cron``: five fields, or six with seconds first; ``every``: a fixed interval
        (``timedelta``, seconds, or ``"10m"``). ``catch_up`` after downtime:
        ``"latest"`` sends only the most recent missed tick, ``"all"`` each of them up
        to ``max_catch_up``. ``jitter`` delays each tick by up to that much;
        ``overlap=False`` skips a tick while the previous tick's task still waits or
        runs. The name defaults to the task's.

        >>> reg.schedule(reingest, every=timedelta(minutes=10), payload={"folder": "in"})
        ...                                                   # doctest: +SKIP
        """
        built = self.build_schedule(
            task, name=name, cron=cron, every=every, timezone=timezone, payload=payload,
            catch_up=catch_up, max_catch_up=max_catch_up, jitter=jitter, overlap=overlap,
        )  # fmt: skip
        if built.name in self.schedules:
            raise AlreadyRegistered(f"schedule {built.name!r} is already declared")
        self.schedules[built.name] = built
        return built

    def add_schedule(self, task: Task[Any, Any] | str, **options: Any) -> Schedule:
        """Add or change a schedule in the database now, as an operator would (it is
        not declared in code, so no worker removes it); takes and checks what
        :meth:`schedule` does. Pause, resume, trigger, list and delete schedules with
        the client."""
        built = self.build_schedule(task, **options)
        self.client.write_schedule(built)
        return built

    def build_schedule(self, task: Task[Any, Any] | str, **options: Any) -> Schedule:
        """A schedule of one of this registry's tasks, checked whole (it takes what
        :meth:`schedule` does), neither declared nor written."""
        found = self.get(task) if isinstance(task, str) else task
        if not isinstance(found, Task) or self.tasks.get(found.name) is not found:
            name = options.get("name")
            raise TaskNotFound(
                f"schedule {name or found!r}: its task is not registered in this registry"
            )
        return Schedule.build(found, **options)

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        max_concurrency: int | None = None,
        max_concurrency_per_key: int | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_crashes: int = DEFAULT_MAX_CRASHES,
        backoff: Backoff | timedelta | float | None = None,
        timeout: Duration | None = None,
        lease: Duration | None = None,
        priority: int = 0,
        isolation: str = "thread",
        rate: Rate | str | None = None,
        rate_per_key: Rate | str | None = None,
        rate_keys: Mapping[str, Rate | str] | None = None,
        cost: Cost = 1,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(  # type: ignore[misc]  # mypy cannot match the bare-decorator overload
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        max_concurrency: int | None = None,
        max_concurrency_per_key: int | None = None,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_crashes: int = DEFAULT_MAX_CRASHES,
        backoff: Backoff | timedelta | float | None = None,
        timeout: Duration | None = None,
        lease: Duration | None = None,
        priority: int = 0,
        isolation: str = "thread",
        rate: Rate | str | None = None,
        rate_per_key: Rate | str | None = None,
        rate_keys: Mapping[str, Rate | str] | None = None,
        cost: Cost = 1,
    ) -> Any:
        """Register a function as a task (usable bare or with options).

        ``max_concurrency`` is fleet-wide and exact, ``max_concurrency_per_key`` the
        same per partition key; ``max_attempts`` caps error
        retries; ``max_crashes`` caps takeovers after a lost lease before the task is
        quarantined; ``lease`` overrides the worker's lease for long tasks.
        ``isolation="process"`` runs the task in a reusable child process: CPU-bound
        work runs in parallel and a ``timeout`` or a cancellation kills the child.
        ``rate`` (``"50/s"``), ``rate_per_key`` and ``rate_keys`` limit its starts
        fleet-wide (:mod:`tenure.rates`); ``cost`` is what each start spends, in units,
        or a function of the validated payload.
        """

        def register(f: Callable[..., Any]) -> Task[Any, Any]:
            options = TaskOptions.build(
                name=name or default_name(f),
                queue=queue,
                max_concurrency=max_concurrency,
                max_concurrency_per_key=max_concurrency_per_key,
                max_attempts=max_attempts,
                max_crashes=max_crashes,
                backoff=backoff,
                timeout=timeout,
                lease=lease,
                priority=priority,
                isolation=isolation,
                rate=rate,
                rate_per_key=rate_per_key,
                rate_keys=rate_keys,
                cost=cost,
            )
            if options.name in self.tasks:
                raise AlreadyRegistered(f"task {options.name!r} is already registered")
            task: Task[Any, Any] = Task(self, f, options)
            self.tasks[options.name] = task
            return task

        if fn is not None:
            return register(fn)
        return register

    def get(self, name: str) -> Task[Any, Any]:
        """The task registered under ``name``, or :class:`TaskNotFound`."""
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise TaskNotFound(f"no task named {name!r} is registered (known: {known})") from None

    def send(self, name: str, payload: Any, **kwargs: Any) -> TaskHandle:
        """Send a task by name: ``reg.send("myapp.tasks.parse", {...})``."""
        return self.get(name).send(payload, **kwargs)

    def queues(self) -> list[str]:
        """Every queue some registered task uses or ``queue()`` declared, sorted."""
        return sorted({t.options.queue for t in self.tasks.values()} | set(self.queue_options))
