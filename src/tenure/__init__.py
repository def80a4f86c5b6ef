"""tenure: a leased, fenced PostgreSQL task queue for fleets of workers.

>>> from tenure import Registry
>>> reg = Registry()
>>> @reg.task(queue="documents")
... def parse_document(payload: dict) -> None: ...
"""

from typing import TYPE_CHECKING, Any

from tenure._untrusted import inert
from tenure._version import __version__
from tenure.client import Client, RetryResult, TaskInfo
from tenure.context import TaskContext, current
from tenure.errors import (
    AlreadyRegistered,
    ConfigError,
    DatabaseError,
    Discard,
    EmbeddedServerError,
    LeaseLost,
    PayloadInvalid,
    QueueNotFound,
    ResultTimeout,
    RetryAfter,
    SchemaNotReady,
    SchemaTooNew,
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TaskSignal,
    TenureError,
)
from tenure.handle import TaskHandle
from tenure.limits import Limits
from tenure.options import Backoff
from tenure.rates import Rate
from tenure.registry import Registry, Task
from tenure.states import TaskState

if TYPE_CHECKING:
    from tenure._worker.config import WorkerConfig
    from tenure._worker.http import SurfacesConfig as ProbesConfig
    from tenure._worker.worker import Worker, run_worker

#: Running a worker from code, loaded on first use (``import tenure`` stays light).
_WORKER_API = {
    "Worker": ("tenure._worker.worker", "Worker"),
    "run_worker": ("tenure._worker.worker", "run_worker"),
    "WorkerConfig": ("tenure._worker.config", "WorkerConfig"),
    "ProbesConfig": ("tenure._worker.http", "SurfacesConfig"),
}


def __getattr__(name: str) -> Any:
    if name in _WORKER_API:
        import importlib

        module, attr = _WORKER_API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'tenure' has no attribute {name!r}")


__all__ = [
    "AlreadyRegistered",
    "Backoff",
    "Client",
    "ConfigError",
    "DatabaseError",
    "Discard",
    "EmbeddedServerError",
    "LeaseLost",
    "Limits",
    "PayloadInvalid",
    "ProbesConfig",
    "QueueNotFound",
    "Registry",
    "ResultTimeout",
    "RetryResult",
    "Rate",
    "RetryAfter",
    "SchemaNotReady",
    "SchemaTooNew",
    "Task",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskHandle",
    "TaskInfo",
    "TaskNotFound",
    "TaskSignal",
    "TaskState",
    "TenureError",
    "Worker",
    "WorkerConfig",
    "__version__",
    "current",
    "inert",
    "run_worker",
]
