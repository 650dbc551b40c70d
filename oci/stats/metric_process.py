"""The ``process`` metric family: a container's processes, threads, open files and sockets.

Processes are the cgroup's ``cgroup.procs``; threads its ``pids.current`` (the pids
controller counts tasks) and their limit ``pids.max`` (0 = unlimited). Descriptors and
sockets are counted in ``/proc/<pid>/fd`` of each process; a process that exits while it
is read is skipped. The soft ``max_open_files`` limit is read from the container's first
process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from oci.stats.cgroups import CgroupDirs, read_pids, read_text
from oci.stats.metric_cgroup import Reading, cgroup_pids

PROC = "/proc"


def process(dirs: CgroupDirs, init_pid: int, proc: str = PROC) -> Iterator[Reading]:
    """Process, thread, descriptor and socket counts, and the open-files soft limit."""
    tasks = read_pids(dirs)
    if tasks is not None:
        yield "container_threads", (), tasks.current
        yield "container_threads_max", (), tasks.limit or 0
    pids = cgroup_pids(dirs)
    if pids is None:
        return
    yield "container_processes", (), len(pids)
    fds, sockets = 0, 0
    for pid in pids:
        counted = count_fds(pid, proc)
        if counted is not None:
            fds, sockets = fds + counted[0], sockets + counted[1]
    yield "container_file_descriptors", (), fds
    yield "container_sockets", (), sockets
    if init_pid > 0 and init_pid in pids:
        soft = open_files_soft_limit(init_pid, proc)
        if soft is not None:
            yield "container_ulimits_soft", ("max_open_files",), soft


def count_fds(pid: int, proc: str = PROC) -> tuple[int, int] | None:
    """(open descriptors, of which sockets) of ``pid``; None if it is gone."""
    fd_dir = f"{proc}/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return None
    sockets = 0
    for name in names:
        try:
            if os.readlink(f"{fd_dir}/{name}").startswith("socket:"):
                sockets += 1
        except OSError:
            continue  # closed meanwhile
    return len(names), sockets


def open_files_soft_limit(pid: int, proc: str = PROC) -> int | None:
    """The soft ``Max open files`` of ``pid`` from ``/proc/<pid>/limits``; None if gone
    or unlimited."""
    text = read_text(f"{proc}/{pid}/limits")
    for line in (text or "").splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files"):].split()[0]
            return int(soft) if soft.isdigit() else None
    return None
