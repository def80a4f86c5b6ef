"""Size limits on what tasks carry: payloads at ``send``, results and error texts in
the worker.

Rules:
- A payload is checked once, at ``send``, on the JSON text that will be stored: its
  size, its nesting depth, and what JSON cannot carry (NaN and infinities, NUL).
  What is refused raises :class:`PayloadInvalid` naming the limit, the size and the
  field; nothing is sent.
- A result or an error text is checked in the worker, for thread, async and process
  tasks alike, before it reaches the database: a result over the limit fails the
  task at once (the same code returns the same value), an error text over the limit
  is cut to its last part (where a traceback says what raised), and text that is not
  valid UTF-8 is kept with escapes.
- Nothing here needs the database: a refused payload costs no round trip.

>>> Registry(limits=Limits(payload_bytes=4 * MB))           # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import traceback
from dataclasses import dataclass
from typing import Any

from tenure.errors import ConfigError, PayloadInvalid

KB = 1024
MB = 1024 * KB

DEFAULT_PAYLOAD_BYTES = 1 * MB
DEFAULT_RESULT_BYTES = 10 * MB
DEFAULT_ERROR_CHARS = 8 * KB
DEFAULT_DEPTH = 64
MAX_DEPTH = 128  # the worker's JSON parser refuses documents much deeper than this
MAX_BYTES = 256 * MB  # PostgreSQL's jsonb holds at most 256 MB


@dataclass(frozen=True)
class Limits:
    """How large a payload, result and error text may be, and how deep a payload."""

    payload_bytes: int = DEFAULT_PAYLOAD_BYTES
    result_bytes: int = DEFAULT_RESULT_BYTES
    error_chars: int = DEFAULT_ERROR_CHARS
    depth: int = DEFAULT_DEPTH

    def __post_init__(self) -> None:
        for name, low, high in (
            ("payload_bytes", 64, MAX_BYTES),
            ("result_bytes", 64, MAX_BYTES),
            ("error_chars", 256, MAX_BYTES),
            ("depth", 1, MAX_DEPTH),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"limits.{name}: must be a whole number from {low} to {high}")

    def check_payload(
        self, text: str, size: int, where: str, value: Any, nan_as_null: bool
    ) -> None:
        """Refuse the JSON text (``size`` bytes) of a payload that breaks a limit.
        ``value`` is the payload it was made from, walked only to name the field at
        fault; ``nan_as_null`` says its serializer wrote NaN as null (a pydantic
        model's own config), so a null may hide one."""
        if size > self.payload_bytes:
            raise PayloadInvalid(
                f"{where} too large: {human_size(size)}, limit {human_size(self.payload_bytes)}; "
                "store large data elsewhere and send a reference to it"
            )
        # Cheap tests on the text first; the walk only runs when one may have hit.
        if text.count("[") + text.count("{") > self.depth:
            path = _too_deep(value, self.depth)
            if path is not None:
                shown = path if len(path) <= 40 else path[:40] + "…"
                raise PayloadInvalid(
                    f"{where} nested more than {self.depth} levels deep (Limits.depth), "
                    f"at {shown}; the worker could not read it back"
                )
        if "\\u0000" in text:
            raise PayloadInvalid(
                f"{where}{_find(value, _has_nul)} contains a NUL character, "
                "which PostgreSQL cannot store; remove it or send the data encoded (base64)"
            )
        if not_json(text) or (nan_as_null and "null" in text and _find(value, _not_finite) != ""):
            raise PayloadInvalid(
                f"{where}{_find(value, _not_finite) or ' (a number)'} is NaN or infinite, "
                "which JSON cannot carry; send null or a string instead"
            )

    def check_result(self, encoded: bytes) -> str | None:
        """Why a task's encoded result cannot be stored, or None when it can."""
        return self._result_too_large(len(encoded)) if len(encoded) > self.result_bytes else None

    def precheck_result(self, value: Any) -> str | None:
        """Why a result is too large to store, told without encoding it when its
        strings alone pass the limit (encoding 300 MB takes seconds); None when it
        may fit, and :meth:`check_result` decides on the encoded bytes."""
        size = size_at_least(value, self.result_bytes)
        return self._result_too_large(size) if size > self.result_bytes else None

    def _result_too_large(self, size: int) -> str:
        return (
            f"result too large: {human_size(size)}, limit {human_size(self.result_bytes)} "
            "(Limits.result_bytes); store large results elsewhere and return a reference"
        )

    def exception_text(self, exc: BaseException) -> str:
        """The traceback of ``exc`` as it can be stored, whatever its ``str()`` does."""
        try:
            text = "".join(traceback.format_exception(exc)).strip()
        except Exception as again:  # a __str__ that raises, a broken traceback
            text = f"{type(exc).__qualname__} (its message could not be shown: {again!r})"
        return self.error_text(text)

    def error_text(self, text: str) -> str:
        """An error text as it can be stored: no NUL, valid UTF-8, within the limit
        (the end is kept: a traceback's last lines say what raised)."""
        utf8 = _utf8_ok(text)
        note = "" if utf8 else "(error text not UTF-8; shown with escapes) "
        text = _storable(text, utf8)
        if len(text) > self.error_chars:
            text = "…" + text[-(self.error_chars - 1) :]
        return note + text if note else text


DEFAULT = Limits()


def clean_text(text: str) -> str:
    """``text`` as PostgreSQL can store it: NUL and lone surrogates escaped."""
    return _storable(text, _utf8_ok(text))


def _storable(text: str, utf8: bool) -> str:
    if not utf8:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\0")


def not_utf8_at(value: Any) -> str | None:
    """Where in ``value`` a string or key is not valid UTF-8 (a lone surrogate, as a
    file name decoded with ``surrogateescape`` holds), as ``.a[2]``; None if nowhere."""
    path = _find(value, lambda v: isinstance(v, str) and not _utf8_ok(v))
    return path if path or (isinstance(value, str) and not _utf8_ok(value)) else None


def human_size(n: int) -> str:
    if n >= MB:
        return f"{n / MB:.1f} MB"
    if n >= KB:
        return f"{n / KB:.1f} KB"
    return f"{n} bytes"


def _utf8_ok(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def not_json(text: str) -> bool:
    """Whether encoded text holds NaN or an infinity as a number, which JSON lacks
    (cheap unless the words appear at all)."""
    return ("NaN" in text or "Infinity" in text) and _has_constants(text)


def _has_constants(text: str) -> bool:

    def refuse(_: str) -> Any:
        raise ValueError

    try:
        json.loads(text, parse_constant=refuse)
    except ValueError:
        return True
    return False


def size_at_least(value: Any, limit: int, budget: int = 10_000) -> int:
    """A lower bound of ``value``'s JSON size, from its strings and items; the walk
    stops once past ``limit`` or after ``budget`` values (0 for an unknown type)."""
    total = 0
    stack = [value]
    while stack and total <= limit and budget > 0:
        v = stack.pop()
        budget -= 1
        if isinstance(v, str | bytes | bytearray):
            total += len(v) + 2
        elif isinstance(v, dict):
            total += 2 + len(v)
            for k, child in v.items():
                total += len(k) + 2 if isinstance(k, str) else 1
                stack.append(child)
        elif isinstance(v, list | tuple):
            total += 2 + len(v)
            stack.extend(v)
        else:
            total += 1
    return total


def _children(value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [(f".{k}" if isinstance(k, str) else f"[{k!r}]", v) for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [(f"[{i}]", v) for i, v in enumerate(value)]
    dump = getattr(value, "model_dump", None)  # a pydantic model
    if callable(dump):
        return _children(dump())
    return []


def _too_deep(value: Any, depth: int) -> str | None:
    """The path of the first container deeper than ``depth``, else None."""
    stack: list[tuple[str, Any, int]] = [("", value, 1)]
    while stack:
        path, v, level = stack.pop()
        kids = _children(v)
        if not kids and not isinstance(v, dict | list | tuple):
            continue
        if level > depth:
            return path
        stack.extend((path + step, child, level + 1) for step, child in kids)
    return None


def _find(value: Any, bad: Any) -> str:
    """The path of the first key or value for which ``bad`` holds, as ``.a[2]`` or
    ``.a key 'k'`` ('' for the payload itself or when none is found)."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, v = stack.pop()
        if bad(v):
            return path
        if isinstance(v, dict):
            for k in v:
                if bad(k):
                    return f"{path} key {k!r}"
        stack.extend((path + step, child) for step, child in _children(v))
    return ""


def _has_nul(v: Any) -> bool:
    return isinstance(v, str) and "\x00" in v


def _not_finite(v: Any) -> bool:
    return isinstance(v, float) and not math.isfinite(v)
