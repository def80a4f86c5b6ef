"""One event vocabulary for logs, metrics and the dashboard, and the log formats.

Every log line tenure writes starts with an event name followed by ``key=value``
fields (``task_claimed task=12 attempt=1 queue=work worker=…``). The readable format
prints that line as it is; ``--log-format json`` turns it into one JSON object per
line with ``event``, ``task_id``, ``queue``, ``attempt`` and ``worker_id`` where the
line names them. The same names count in :mod:`tenure._worker.metrics` (an event
``task_succeeded`` is the metric ``tenure_tasks_succeeded_total``) and label the
outcomes on the dashboard.

    task_claimed task=3 attempt=1 queue=work worker=5f0c…
    {"ts": "…", "level": "debug", "logger": "tenure._worker.claim_loop",
     "event": "task_claimed", "task_id": 3, "attempt": 1, "queue": "work",
     "worker_id": "5f0c…", "message": "task_claimed task=3 attempt=1 queue=work worker=5f0c…"}

One record is one line in either format, whatever its arguments hold: task data
(payload keys, error texts, queue names) reaches log messages, so the readable
format shows a newline, carriage return or any other control character in the
message as a visible escape (``\n``, ``\x1b``), and JSON escapes them as JSON
does. A traceback (``exc_info``) keeps its own lines in the readable format, each
indented under its record so that none can pass for a record of its own; its control
characters other than newline and tab are escaped too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from tenure._untrusted import inert
from tenure.states import EVENT_MEANINGS

#: The events tenure reports, with what each means (see :mod:`tenure.states`).
EVENTS: dict[str, str] = {str(e): m for e, m in EVENT_MEANINGS.items()}

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

_EVENT = re.compile(r"^([a-z][a-z0-9_]*)(?=\s|$|:)")
_FIELD = re.compile(r"([a-z_]+)=(\S+)")
_RENAMED = {"task": "task_id", "worker": "worker_id"}


def parse_event(message: str) -> dict[str, Any]:
    """Split a log message into its event name and ``key=value`` fields.

    Fields are read up to the first word that is not ``key=value``; the rest of
    the line is free text and stays only in ``message``.
    """
    found: dict[str, Any] = {}
    head = _EVENT.match(message)
    if head is None or "_" not in head.group(1):
        return found
    found["event"] = head.group(1)
    for word in message[head.end() :].split():
        match = _FIELD.fullmatch(word.rstrip(":;,"))
        if match is None:
            break
        key, value = _RENAMED.get(match.group(1), match.group(1)), match.group(2)
        found[key] = int(value) if value.isdigit() and len(value) < 19 else value
        if word.endswith((":", ";")):
            break
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, the event and its fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        entry.update(parse_event(message))
        entry["message"] = message
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT``, one line a record: the message inert, a traceback indented."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, but the message made inert on a copy of the record
        # (other handlers see it as it was) and the traceback never cached on it.
        safe = logging.makeLogRecord(record.__dict__)
        safe.message = inert(record.getMessage())
        safe.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(safe)
        if record.exc_info:
            line += "\n" + _indented(self.formatException(record.exc_info))
        elif record.exc_text:
            line += "\n" + _indented(record.exc_text)
        if record.stack_info:
            line += "\n" + _indented(self.formatStack(record.stack_info))
        return line


def _indented(text: str) -> str:
    return "\n".join("    " + line for line in inert(text, lines=True).splitlines())


def setup_logging(level: str = "info", log_format: str = "text") -> None:
    """Send tenure's logs to stderr, readable (``text``) or as JSON lines (``json``)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
