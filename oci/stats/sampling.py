"""One read of a cgroup's CPU, memory, swap and I/O figures, as the CRI reports them."""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass

from oci.stats.cgroups import (
    CgroupDirs,
    read_cpu_usage,
    read_memory,
    read_pids,
    read_pressure,
    read_swap,
)
from oci.stats.cpu_rate import CpuRates
from oci.stats.model import CpuUsage, IoUsage, MemoryUsage, ProcessUsage, SwapUsage


@dataclass(frozen=True)
class CgroupFigures:
    """The parts read from one cgroup; each None if its files could not be read."""

    cpu: CpuUsage | None = None
    memory: MemoryUsage | None = None
    swap: SwapUsage | None = None
    io: IoUsage | None = None
    process: ProcessUsage | None = None


def read_figures(
    dirs: CgroupDirs, key: Hashable, rates: CpuRates, *, swap: bool, pids: bool = False
) -> CgroupFigures:
    """Read the cgroup at ``dirs`` once, stamped with the time of the read.

    The CPU sample goes into ``rates`` under ``key`` and its rate is reported. Swap is
    read only when ``swap`` (the host has swap), the task count only when ``pids``.
    A part whose files are gone is None; nothing here raises for a vanished cgroup.
    """
    now = time.time_ns()
    cpu = memory = swap_usage = io = process = None
    usage = read_cpu_usage(dirs)
    if usage is not None:
        rate = rates.observe(key, now, usage)
        cpu = CpuUsage(now, usage, rate, read_pressure(dirs, "cpu"))
    mem = read_memory(dirs)
    if mem is not None:
        memory = MemoryUsage(
            timestamp=now,
            working_set_bytes=mem.working_set,
            available_bytes=mem.available,
            usage_bytes=mem.usage,
            rss_bytes=mem.rss,
            page_faults=mem.page_faults,
            major_page_faults=mem.major_page_faults,
            psi=read_pressure(dirs, "memory"),
        )
    if swap:
        sw = read_swap(dirs)
        if sw is not None:
            swap_usage = SwapUsage(now, sw.available, sw.usage)
    io_psi = read_pressure(dirs, "io")
    if io_psi is not None:
        io = IoUsage(now, io_psi)
    if pids:
        p = read_pids(dirs)
        if p is not None:
            process = ProcessUsage(now, p.current)
    return CgroupFigures(cpu, memory, swap_usage, io, process)
