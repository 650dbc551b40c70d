"""Checks on strings a client sends, and the one way to echo them back.

Every string that reaches a file, an argv, a path or a firewall rule goes through one
of these checks first; every message or log line that quotes client input uses
``shorten`` so a megabyte of input never comes back (or lands in the log) whole.
"""

from __future__ import annotations

import re

from base.errors import InvalidArgument

PATH_MAX = 4096  # bytes, the terminating NUL included (linux/limits.h)
NAME_MAX = 255  # bytes in one path component
ECHO_LIMIT = 80  # characters of client input quoted in a message

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1


def shorten(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` for a message, of at most ``limit`` characters of the value.

    A longer value keeps its start and its end (where a path's file name is) with
    "..." between them.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    half = max(limit // 2 - 2, 1)
    return repr(f"{text[:half]}...{text[-half:]}")


def control_char(text: str) -> str | None:
    """The first control character (NUL, newline, DEL, C1...) in ``text``, if any."""
    found = _CONTROL.search(text)
    return found.group() if found else None


def check_text(text: str, what: str, max_bytes: int, *, newlines: bool = False) -> str:
    """Return ``text`` if it fits in ``max_bytes`` (UTF-8) and has no control characters.

    ``newlines`` allows newline and tab (for free text such as a shell script), never NUL.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise InvalidArgument(f"{what} is {size} bytes long; the limit is {max_bytes}")
    bad = control_char(text.replace("\n", "").replace("\t", "") if newlines else text)
    if bad is not None:
        raise InvalidArgument(
            f"{what} {shorten(text)} holds the control character {bad!r}, which is not allowed"
        )
    return text


def check_no_nul(text: str, what: str) -> str:
    """Return ``text`` unless it holds a NUL byte (which a C string would cut it at)."""
    if "\0" in text:
        raise InvalidArgument(f"{what} {shorten(text)} holds a NUL byte, which is not allowed")
    return text


def check_path(path: str, what: str, *, absolute: bool = True) -> str:
    """Return ``path`` if the kernel can take it: bounded, no control characters.

    At most PATH_MAX - 1 bytes, each component at most NAME_MAX bytes; ``absolute``
    also requires a leading "/".
    """
    check_text(path, what, PATH_MAX - 1)
    if absolute and not path.startswith("/"):
        raise InvalidArgument(f"{what} {shorten(path)} must be an absolute path")
    for part in path.split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > NAME_MAX:
            raise InvalidArgument(
                f"{what} {shorten(path)} has a component longer than {NAME_MAX} bytes"
            )
    return path
