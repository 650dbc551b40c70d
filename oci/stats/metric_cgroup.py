"""CRI metric readings from a container's cgroup files: cpu, memory, oom, hugetlb, pressure.

Each family function takes the container's ``CgroupDirs`` and yields ``Reading``s
(name, extra label values, value); a file that is gone or absent on this host yields
nothing for its metrics, never an error, so a cgroup removed mid-read costs only its own
figures. Times are whole seconds: the wire carries unsigned integers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from functools import cache

from oci.stats.cgroups import (
    CgroupDirs,
    read_cpu,
    read_int,
    read_keyed,
    read_memory,
    read_pressure,
    read_text,
)
from sandbox.cgroup_layout import V2

Reading = tuple[str, tuple[str, ...], int]
NS_PER_S = 1_000_000_000
HUGEPAGES_DIR = "/sys/kernel/mm/hugepages"


def cpu(dirs: CgroupDirs) -> Iterator[Reading]:
    """CPU time (user, system, total) and CFS throttling, in whole seconds and counts."""
    stat = read_cpu(dirs)
    if stat is None:
        return
    if stat.user_ns is not None:
        yield "container_cpu_user_seconds_total", (), stat.user_ns // NS_PER_S
    if stat.system_ns is not None:
        yield "container_cpu_system_seconds_total", (), stat.system_ns // NS_PER_S
    yield "container_cpu_usage_seconds_total", ("total",), stat.usage_ns // NS_PER_S
    if stat.periods is not None:
        yield "container_cpu_cfs_periods_total", (), stat.periods
    if stat.throttled_periods is not None:
        yield "container_cpu_cfs_throttled_periods_total", (), stat.throttled_periods
    if stat.throttled_ns is not None:
        yield "container_cpu_cfs_throttled_seconds_total", (), stat.throttled_ns // NS_PER_S


def memory(dirs: CgroupDirs) -> Iterator[Reading]:
    """Usage and its breakdown, peak, swap, kernel memory, limit hits and page faults."""
    mem = read_memory(dirs)
    d = dirs.controller("memory")
    if mem is None or d is None:
        return
    yield "container_memory_usage_bytes", (), mem.usage
    yield "container_memory_working_set_bytes", (), mem.working_set
    yield "container_memory_rss", (), mem.rss
    yield "container_memory_cache", (), mem.cache
    yield "container_memory_mapped_file", (), mem.mapped_file
    stat = mem.stat
    if dirs.version == V2:
        yield from _memory_v2(d, stat)
    else:
        yield from _memory_v1(d, mem.usage)
    local = ("pgfault", "pgmajfault")
    total = local if dirs.version == V2 else ("total_pgfault", "total_pgmajfault")
    for kind, own, below in zip(("pgfault", "pgmajfault"), local, total, strict=True):
        if own in stat:
            yield "container_memory_failures_total", (kind, "container"), stat[own]
        if below in stat:
            yield "container_memory_failures_total", (kind, "hierarchy"), stat[below]


def _memory_v1(d: str, usage: int) -> Iterator[Reading]:
    peak = read_int(f"{d}/memory.max_usage_in_bytes")
    if peak is not None:
        yield "container_memory_max_usage_bytes", (), peak
    failcnt = read_int(f"{d}/memory.failcnt")
    if failcnt is not None:
        yield "container_memory_failcnt", (), failcnt
    kmem = read_int(f"{d}/memory.kmem.usage_in_bytes")
    if kmem is not None:
        yield "container_memory_kernel_usage", (), kmem
    both = read_int(f"{d}/memory.memsw.usage_in_bytes")
    if both is not None:
        yield "container_memory_swap", (), max(both - usage, 0)


def _memory_v2(d: str, stat: Mapping[str, int]) -> Iterator[Reading]:
    peak = read_int(f"{d}/memory.peak")
    if peak is not None:
        yield "container_memory_max_usage_bytes", (), peak
    events = read_keyed(f"{d}/memory.events")
    if events is not None and "max" in events:
        yield "container_memory_failcnt", (), events["max"]
    if "kernel" in stat:
        yield "container_memory_kernel_usage", (), stat["kernel"]
    swap = read_int(f"{d}/memory.swap.current")
    if swap is not None:
        yield "container_memory_swap", (), swap


def oom(dirs: CgroupDirs) -> Iterator[Reading]:
    """OOM kills in the cgroup: v1 ``memory.oom_control``, v2 ``memory.events``."""
    d = dirs.controller("memory")
    if d is None:
        return
    name = "memory.events" if dirs.version == V2 else "memory.oom_control"
    counts = read_keyed(f"{d}/{name}")
    if counts is not None and "oom_kill" in counts:
        yield "container_oom_events_total", (), counts["oom_kill"]


def pressure(dirs: CgroupDirs) -> Iterator[Reading]:
    """PSI totals from the cgroup2 directory (v2, and hybrid's controller-less tree):
    ``some`` is waiting, ``full`` stalled."""
    for resource in ("cpu", "memory", "io"):
        psi = read_pressure(dirs, resource)
        if psi is None:
            continue
        yield f"container_pressure_{resource}_waiting_seconds_total", (), (
            psi.some.total_ns // NS_PER_S
        )
        if psi.full is not None:
            yield f"container_pressure_{resource}_stalled_seconds_total", (), (
                psi.full.total_ns // NS_PER_S
            )


def hugetlb(dirs: CgroupDirs) -> Iterator[Reading]:
    """Huge page use per page size: v1 usage and peak; v2 ``hugetlb.<size>.current``
    (v2 keeps no peak)."""
    d = dirs.controller("hugetlb")
    if d is None:
        return
    for size in hugepage_sizes():
        if dirs.version == V2:
            current = read_int(f"{d}/hugetlb.{size}.current")
            if current is not None:
                yield "container_hugetlb_usage_bytes", (size,), current
            continue
        usage = read_int(f"{d}/hugetlb.{size}.usage_in_bytes")
        if usage is not None:
            yield "container_hugetlb_usage_bytes", (size,), usage
        peak = read_int(f"{d}/hugetlb.{size}.max_usage_in_bytes")
        if peak is not None:
            yield "container_hugetlb_max_usage_bytes", (size,), peak


@cache
def hugepage_sizes(root: str = HUGEPAGES_DIR) -> tuple[str, ...]:
    """The host's huge page sizes as the hugetlb controller names them (``2MB``, ``1GB``)."""
    try:
        names = os.listdir(root)
    except OSError:
        return ()
    sizes = []
    for name in sorted(names):
        kb = name.removeprefix("hugepages-").removesuffix("kB")
        if kb.isdigit():
            sizes.append(_size_name(int(kb) * 1024))
    return tuple(sizes)


def _size_name(size: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


def cgroup_pids(dirs: CgroupDirs) -> list[int] | None:
    """Pids in the cgroup itself (``cgroup.procs`` of its pids, else memory, directory);
    None if it is gone."""
    d = dirs.controller("pids") or dirs.controller("memory") or dirs.unified
    text = read_text(f"{d}/cgroup.procs") if d else None
    return None if text is None else [int(p) for p in text.split()]
