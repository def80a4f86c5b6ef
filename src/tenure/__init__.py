"""tenure: a leased, fenced PostgreSQL task queue for fleets of workers.

>>> from tenure import Registry
>>> reg = Registry()
>>> @reg.task(queue="documents")
... def parse_document(payload: dict) -> None: ...
"""

__version__ = "0.1.0"

from tenure._untrusted import inert
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
    TaskCancelled,
    TaskFailed,
    TaskNotFound,
    TaskSignal,
    TenureError,
)
from tenure.limits import Limits
from tenure.options import Backoff
from tenure.registry import Registry, Task, TaskHandle
from tenure.states import TaskState

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
    "QueueNotFound",
    "Registry",
    "ResultTimeout",
    "RetryResult",
    "RetryAfter",
    "SchemaNotReady",
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
    "__version__",
    "current",
    "inert",
]
