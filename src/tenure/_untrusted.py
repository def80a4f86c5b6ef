"""Strings from outside tenure's control: what the database holds, and Host headers.

Rules:
- A string read from the database (task names, queues, partition keys, payloads,
  results, error texts) or built from a task's data is shown on a terminal or
  written to a log only through :func:`inert`: control characters become visible
  escapes (``\\x1b``), so no text can move a cursor, retitle a terminal, recolour
  what follows or forge a second log line. Backslashes are left alone: the point is
  a safe screen, not a reversible encoding.
- The dashboard and the worker's HTTP surfaces, when they serve loopback only,
  answer a request only if its ``Host`` header names a loopback host
  (:func:`is_loopback_host_header`); a page elsewhere whose name was rebound to
  127.0.0.1 sends its own name and is refused.
"""

from __future__ import annotations

import ipaddress
import re

# C0 controls, DEL and C1 controls (ESC among them), and the two Unicode line
# separators that log readers split lines on.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROLS_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def inert(text: str, *, lines: bool = False) -> str:
    """``text`` with every control character shown as a visible escape.

    ``lines=True`` keeps newlines and tabs, for fields that are many lines by nature
    (a traceback, indented JSON); ESC, carriage return and the rest are escaped
    always: ``inert("\\x1b[31mred\\n")`` reads ``\\x1b[31mred\\n`` on the screen.
    """
    return (_CONTROLS_BUT_LINES if lines else _CONTROLS).sub(_escape, text)


def last_line(text: str | None, width: int) -> str:
    """The last line of ``text`` (an error's message, after its traceback), cut to
    ``width`` characters; ``""`` for none. Still to be shown through :func:`inert`."""
    if not text or not text.strip():
        return ""
    line = text.strip().splitlines()[-1]
    return line if len(line) <= width else line[: width - 1] + "…"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (a bind address, not a header)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_host_header(value: str | None) -> bool:
    """True when a ``Host`` header names a loopback host, with or without a port.

    ``localhost``, a loopback IPv4 address (``127.0.0.1``) and a bracketed loopback
    IPv6 address (``[::1]``) qualify; anything else, an absent header included,
    does not.
    """
    if not value:
        return False
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")) or ":" not in name:
            return False
        port = rest[1:] if rest else None
    else:
        name, colon, port_text = value.partition(":")
        port = port_text if colon else None
    if port is not None and not (port.isascii() and port.isdigit() and len(port) <= 5):
        return False
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
