"""What ``send`` returns: a handle on the task it created."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pydantic

from tenure.client import Client, TaskInfo


@dataclass(frozen=True)
class TaskHandle:
    """What ``send`` returns: the task id, and ways to look at and act on the task."""

    id: int
    client: Client
    result_type: Any = None

    def info(self) -> TaskInfo:
        """The task as it is now (waiting, running or finished)."""
        return self.client.get(self.id)

    def state(self) -> str:
        return self.info().state

    def cancel(self) -> str:
        """Cancel the task; see :meth:`Client.cancel`."""
        return self.client.cancel(self.id)

    def result(self, timeout: float | timedelta | None = None) -> Any:
        """Wait for the task to finish and return its value (validated against the
        task's return annotation when it has one, e.g. a pydantic model).

        Raises :class:`TaskFailed` if it failed or was quarantined,
        :class:`TaskCancelled` if cancelled, :class:`ResultTimeout` on timeout.
        """
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        value = self.client.result(self.id, seconds)
        if self.result_type in (None, Any, type(None)):
            return value
        return pydantic.TypeAdapter(self.result_type).validate_python(value)
