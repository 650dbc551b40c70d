"""Terminal sizes from a resize stream: ``{"Width": w, "Height": h}`` objects."""

from __future__ import annotations

import json
from collections.abc import Callable

_MAX_BUF = 4096


class ResizeReader:
    """Collects resize bytes and calls ``apply(width, height)`` for each complete size.

    SPDY clients end each object with a newline; WebSocket ones send one object per
    message. Go decodes field names case-insensitively, so do we; a side of 0 is dropped.
    """

    def __init__(self, apply: Callable[[int, int], None]) -> None:
        self._apply = apply
        self._buf = b""

    def feed(self, data: bytes) -> None:
        self._buf = (self._buf + data)[-_MAX_BUF:]
        *lines, rest = self._buf.split(b"\n")
        self._buf = rest
        if rest.rstrip().endswith(b"}"):
            lines.append(rest)
            self._buf = b""
        for line in lines:
            try:
                size = json.loads(line)
            except ValueError:
                continue
            if isinstance(size, dict):
                width, height = _dim(size, "width"), _dim(size, "height")
                if 0 < width <= 0xFFFF and 0 < height <= 0xFFFF:
                    self._apply(width, height)


def _dim(size: dict[str, object], name: str) -> int:
    for k, v in size.items():
        if k.lower() == name and isinstance(v, int) and not isinstance(v, bool):
            return v
    return 0
