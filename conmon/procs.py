"""Process helpers over /proc: liveness, start times, killing a process tree.

Signals go through pidfds opened before the parent/child relation is
re-checked, so a pid that is recycled in between is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(b")") + 2 :].decode().split()


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid``, None if it is gone."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (None if gone)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def boot_ticks_now() -> int:
    """The current time in the unit of ``start_ticks``."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * _CLK_TCK)


def ticks_at(wall_time: float) -> int:
    """The wall-clock time ``wall_time`` (e.g. a file's mtime) in the unit of ``start_ticks``."""
    boot_wall = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return int((wall_time - boot_wall) * _CLK_TCK)


def with_argument_under(directory: str) -> list[int]:
    """Pids whose command line has an argument naming ``directory`` or a path below it."""
    top = os.path.abspath(directory).encode()
    below = top.rstrip(b"/") + b"/"
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if any(a == top or a.startswith(below) for a in argv):
            found.append(int(entry))
    return found


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = parent_pid(int(entry))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (not ``pid`` itself), parents first."""
    children = _children_map()
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _signal_pidfd(fd: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(fd, sig)


def kill_tree(
    root: int, *, not_before_ticks: int | None = None, not_after_ticks: int | None = None
) -> list[int]:
    """SIGKILL ``root`` and every descendant; return the pids signalled.

    The tree is first frozen with SIGSTOP (repeatedly, until no new child
    appears) so that nothing can fork or be re-parented away while it is
    killed. ``not_before_ticks`` and ``not_after_ticks`` guard against a
    recycled ``root`` pid: a process that started outside them is left alone.
    """
    pidfds: dict[int, int] = {}
    try:
        try:
            fd = os.pidfd_open(root)
        except ProcessLookupError:
            return []
        started = start_ticks(root)
        if (started is None or (not_before_ticks is not None and started < not_before_ticks)
                or (not_after_ticks is not None and started > not_after_ticks)):
            os.close(fd)
            return []
        pidfds[root] = fd
        _signal_pidfd(fd, signal.SIGSTOP)
        for _ in range(50):
            new = 0
            for child in descendants(root):
                if child in pidfds:
                    continue
                try:
                    cfd = os.pidfd_open(child)
                except ProcessLookupError:
                    continue
                ppid = parent_pid(child)
                if ppid is None or ppid not in pidfds:
                    os.close(cfd)
                    continue
                pidfds[child] = cfd
                _signal_pidfd(cfd, signal.SIGSTOP)
                new += 1
            if not new:
                break
        for cfd in pidfds.values():
            _signal_pidfd(cfd, signal.SIGKILL)
        return list(pidfds)
    finally:
        for cfd in pidfds.values():
            os.close(cfd)


def wait_gone(pids: list[int], timeout: float) -> bool:
    """Poll until none of ``pids`` is alive; False if some remain at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if not any(is_alive(p) for p in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


@dataclass(frozen=True)
class MemoryUsage:
    """Resident and proportional set size of one process, in KiB."""

    rss_kib: int
    pss_kib: int


def memory_usage(pid: int) -> MemoryUsage | None:
    """RSS and PSS from /proc/PID/smaps_rollup, None if the process is gone."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss"):
                    values[key] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return MemoryUsage(values.get("Rss", 0), values.get("Pss", 0))
