"""The ``spec`` metric family: a container's CPU and memory limits as its cgroup holds
them (so UpdateContainerResources shows), and its start time.

"Unlimited" is sent as 0, as cAdvisor does (a v1 limit above 2^62 counts as none), and a
CPU quota is sent only when there is one.
"""

from __future__ import annotations

from collections.abc import Iterator

from oci.stats.cgroups import UNLIMITED_ABOVE, CgroupDirs, read_int, read_text
from oci.stats.metric_cgroup import NS_PER_S, Reading
from sandbox.cgroup_layout import V2


def spec(dirs: CgroupDirs, started_at_ns: int) -> Iterator[Reading]:
    """Period, quota, shares, memory/soft/swap limits and ``container_start_time_seconds``."""
    if started_at_ns > 0:
        yield "container_start_time_seconds", (), started_at_ns // NS_PER_S
    if dirs.version == V2:
        yield from _cpu_v2(dirs.unified)
        yield from _memory_v2(dirs.unified)
    else:
        yield from _cpu_v1(dirs.controller("cpu"))
        yield from _memory_v1(dirs.controller("memory"))


def _cpu_v1(d: str | None) -> Iterator[Reading]:
    if d is None:
        return
    period = read_int(f"{d}/cpu.cfs_period_us")
    if period is not None:
        yield "container_spec_cpu_period", (), period
    quota = read_int(f"{d}/cpu.cfs_quota_us")
    if quota is not None and quota > 0:
        yield "container_spec_cpu_quota", (), quota
    shares = read_int(f"{d}/cpu.shares")
    if shares is not None:
        yield "container_spec_cpu_shares", (), shares


def _cpu_v2(d: str | None) -> Iterator[Reading]:
    if d is None:
        return
    text = read_text(f"{d}/cpu.max")
    if text is not None:
        parts = text.split()
        if len(parts) == 2 and parts[1].isdigit():
            yield "container_spec_cpu_period", (), int(parts[1])
            if parts[0].isdigit() and int(parts[0]) > 0:
                yield "container_spec_cpu_quota", (), int(parts[0])
    weight = read_int(f"{d}/cpu.weight")
    if weight is not None and 1 <= weight <= 10000:
        yield "container_spec_cpu_shares", (), weight_to_shares(weight)


def weight_to_shares(weight: int) -> int:
    """cgroup v2 ``cpu.weight`` (1..10000) back to v1 shares (2..262144), inverting the
    mapping runc uses to set a weight from shares."""
    return 2 + ((weight - 1) * 262142) // 9999


def _memory_v1(d: str | None) -> Iterator[Reading]:
    if d is None:
        return
    for name, file in (
        ("container_spec_memory_limit_bytes", "memory.limit_in_bytes"),
        ("container_spec_memory_reservation_limit_bytes", "memory.soft_limit_in_bytes"),
        ("container_spec_memory_swap_limit_bytes", "memory.memsw.limit_in_bytes"),
    ):
        value = read_int(f"{d}/{file}")
        if value is not None:
            yield name, (), 0 if value > UNLIMITED_ABOVE else value


def _memory_v2(d: str | None) -> Iterator[Reading]:
    """v2 limits: ``memory.max``, ``memory.low`` (reservation), and memory plus swap
    (``memory.max`` + ``memory.swap.max``, the combined figure v1 and the CRI use)."""
    if d is None:
        return
    limit = _v2_limit(f"{d}/memory.max")
    if limit is not None:
        yield "container_spec_memory_limit_bytes", (), max(limit, 0)
    low = _v2_limit(f"{d}/memory.low")
    if low is not None:
        yield "container_spec_memory_reservation_limit_bytes", (), max(low, 0)
    swap = _v2_limit(f"{d}/memory.swap.max")
    if swap is not None and limit is not None:
        both = 0 if _MAX in (limit, swap) else limit + swap
        yield "container_spec_memory_swap_limit_bytes", (), both


_MAX = -1


def _v2_limit(path: str) -> int | None:
    """A v2 limit file: its value, ``_MAX`` for ``max``, None if unreadable."""
    text = read_text(path)
    if text is None:
        return None
    word = text.strip()
    if word == "max":
        return _MAX
    return int(word) if word.isdigit() else None
