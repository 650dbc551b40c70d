"""Reading /proc about other processes: start times, children, waiting for exit."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path

PROC = Path("/proc")


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone.

    Together with the pid this identifies a process across pid reuse.
    """
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields after the ")" that ends comm: state is field 3, starttime is field 22.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[22 - 3])


def state(pid: int) -> str | None:
    """The one-letter process state (R, S, Z, ...), or None if it is gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(")") + 2]


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid``."""
    task_dir = PROC / str(pid) / "task"
    kids: list[int] = []
    if (task_dir / str(pid) / "children").exists():
        try:
            for task in task_dir.iterdir():
                kids += [int(x) for x in (task / "children").read_text().split()]
        except FileNotFoundError:
            return []  # exited meanwhile
        return kids
    if not task_dir.exists():
        return []
    # No CONFIG_PROC_CHILDREN: scan every process's parent.
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def comm(pid: int) -> str | None:
    """The process's command name, or None if it is gone."""
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def with_output_to(path: Path) -> list[int]:
    """Pids whose standard output is the file ``path``."""
    target = os.path.abspath(path)
    found: list[int] = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "fd" / "1") == target:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` has exited (a zombie counts); True if it did in time."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout * 1000))))
    finally:
        os.close(fd)


def kill_and_wait(pid: int, expected_start: int, timeout: float) -> bool:
    """SIGKILL ``pid`` only if it is still the process that started at ``expected_start``.

    A pidfd pins the process while its start time is checked, so a reused pid
    is never signalled. Returns True once that process has exited (or was
    already gone), False if it outlived ``timeout``.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if start_time(pid) != expected_start:
            return True  # that process is gone and the pid reused
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0, int(timeout * 1000))))
    finally:
        os.close(fd)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.002) -> bool:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
