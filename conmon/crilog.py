"""Reading CRI container log files as conmon writes them.

Each log line is ``<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>\\n``.
``F`` ends a line of the container's output (the ``\\n`` terminating the log
line is the container's own newline); ``P`` is a chunk without a newline (the
``\\n`` was added by conmon). Chunks of one stream are joined up to its next
``F``.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass

from base.errors import DataLoss

STDOUT = "stdout"
STDERR = "stderr"

_TS = (
    rb"(?P<date>\d{4}-\d{2}-\d{2})T(?P<time>\d{2}:\d{2}:\d{2})"
    rb"(?:\.(?P<frac>\d{1,9}))?(?P<tz>Z|[+-]\d{2}:\d{2})"
)
_TS_RE = re.compile(_TS)
_LINE_RE = re.compile(rb"^(?P<ts>" + _TS + rb") (?P<stream>stdout|stderr) (?P<tag>[PF]) ")


@dataclass(frozen=True)
class LogLine:
    """One parsed log line; ``content`` excludes the line's final newline."""

    timestamp_ns: int
    stream: str
    partial: bool
    content: bytes
    timestamp: str = ""


def parse_timestamp(text: str) -> int:
    """Unix time in nanoseconds of an RFC 3339 timestamp with optional fraction."""
    m = _TS_RE.fullmatch(text.encode())
    if not m:
        raise DataLoss(f"{text!r} is not an RFC 3339 timestamp")
    return _timestamp_ns(m)


def _timestamp_ns(m: re.Match[bytes]) -> int:
    year, month, day = (int(x) for x in m["date"].split(b"-"))
    hour, minute, second = (int(x) for x in m["time"].split(b":"))
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    tz = m["tz"]
    if tz != b"Z":
        offset = int(tz[1:3]) * 3600 + int(tz[4:6]) * 60
        seconds -= offset if tz[:1] == b"+" else -offset
    frac = m["frac"] or b""
    return seconds * 1_000_000_000 + int(frac.ljust(9, b"0") or b"0")


def parse_line(line: bytes) -> LogLine:
    """Parse one log line (with or without its trailing newline)."""
    m = _LINE_RE.match(line)
    if not m:
        raise DataLoss(f"not a CRI log line: {line[:120]!r}")
    content = line[m.end() :]
    if content.endswith(b"\n"):
        content = content[:-1]
    return LogLine(
        timestamp_ns=_timestamp_ns(m),
        stream=m["stream"].decode(),
        partial=m["tag"] == b"P",
        content=content,
        timestamp=m["ts"].decode(),
    )


def parse_lines(data: bytes, *, strict: bool = False) -> list[LogLine]:
    """Parse a whole log's bytes; malformed lines are skipped unless ``strict``.

    A last line without newline is ignored: conmon may still be writing it.
    """
    out: list[LogLine] = []
    for raw in data.split(b"\n")[:-1]:
        try:
            out.append(parse_line(raw))
        except DataLoss:
            if strict:
                raise
    return out


def read_log(path: str, *, strict: bool = False) -> list[LogLine]:
    """Parse the log file at ``path``."""
    with open(path, "rb") as f:
        return parse_lines(f.read(), strict=strict)


def reassemble(lines: Iterable[LogLine]) -> list[tuple[str, bytes]]:
    """Join partial chunks into the container's output, message by message.

    Each message is what the container wrote up to and including a newline;
    chunks still open at the end are returned without one.
    """
    pending: dict[str, bytearray] = {}
    out: list[tuple[str, bytes]] = []
    for line in lines:
        buf = pending.setdefault(line.stream, bytearray())
        buf += line.content
        if not line.partial:
            buf += b"\n"
            out.append((line.stream, bytes(buf)))
            del pending[line.stream]
    out.extend((stream, bytes(buf)) for stream, buf in pending.items() if buf)
    return out


def split_streams(lines: Iterable[LogLine], max_bytes: int) -> tuple[bytes, bytes, bool]:
    """``(stdout, stderr, truncated)``: each stream's output, at most ``max_bytes``."""
    streams = {STDOUT: bytearray(), STDERR: bytearray()}
    truncated = False
    for line in lines:
        buf = streams[line.stream]
        piece = line.content if line.partial else line.content + b"\n"
        room = max_bytes - len(buf)
        if len(piece) > room:
            truncated = True
            piece = piece[: max(room, 0)]
        buf += piece
    return bytes(streams[STDOUT]), bytes(streams[STDERR]), truncated
