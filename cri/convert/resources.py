"""LinuxContainerResources to domain Resources, with the kernel's ranges checked.

The same checks serve CreateContainer and UpdateContainerResources, so a value the
kernel (or runc) would refuse is INVALID_ARGUMENT before anything runs. Zero (or
empty) means "not specified" throughout, as in the CRI.
"""

from __future__ import annotations

import re

from api import api_pb2 as pb
from base.errors import InvalidArgument
from base.text import check_text, shorten
from oci.spec.inputs import HugepageLimit, Resources

# kernel/sched: cpu.shares 2..262144 (v1; runc maps them onto cpu.weight on v2).
MIN_CPU_SHARES, MAX_CPU_SHARES = 2, 262144
# CFS bandwidth: a period of 1 ms..1 s, a quota of at least 1 ms (-1: unlimited).
MIN_CPU_PERIOD, MAX_CPU_PERIOD = 1000, 1_000_000
MIN_CPU_QUOTA, MAX_CPU_QUOTA = 1000, (1 << 44) // 1000
# Below this runc's own init cannot start in the cgroup (CRI-O's minimum, too).
MIN_MEMORY = 12 << 20
MIN_OOM_SCORE_ADJ, MAX_OOM_SCORE_ADJ = -1000, 1000
# A cpu or memory-node list: "0-3,8,10-11".
_CPUSET = re.compile(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*")
MAX_CPUSET_LEN = 1024
MAX_CPU_NUMBER = 8191  # the kernel's CONFIG_NR_CPUS limit
# A cgroup v2 interface file name such as "memory.high" (never a path).
_UNIFIED_KEY = re.compile(r"[a-z][a-z0-9_]*\.[a-z0-9_.]+")
MAX_UNIFIED_VALUE = 4096


def _range(value: int, low: int, high: int, field: str, extra: str = "") -> None:
    if value and not low <= value <= high:
        raise InvalidArgument(
            f"{field} {value} is outside {low}-{high}{extra} (0 leaves it unset)"
        )


def cpuset(value: str, field: str) -> str:
    """A cpuset list ("0-3,6"): ranges ascending, numbers bounded; "" is unset."""
    if not value:
        return value
    if len(value) > MAX_CPUSET_LEN or not _CPUSET.fullmatch(value):
        raise InvalidArgument(
            f"{field} {shorten(value)} is not a list such as 0-3,6 (numbers and ranges)"
        )
    for part in value.split(","):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if first > last or last > MAX_CPU_NUMBER:
            raise InvalidArgument(
                f"{field} {shorten(value)}: {part} is not an ascending range of numbers up "
                f"to {MAX_CPU_NUMBER}"
            )
    return value


def _unified(values: dict[str, str]) -> dict[str, str]:
    for key, value in values.items():
        if not _UNIFIED_KEY.fullmatch(key) or len(key) > 255:
            raise InvalidArgument(
                f"unified resource {shorten(key)} is not a cgroup v2 file name such as "
                "memory.high"
            )
        check_text(value, f"unified resource {key}", MAX_UNIFIED_VALUE)
    return values


def resources(r: pb.LinuxContainerResources) -> Resources:
    """The domain Resources; InvalidArgument for any value outside the kernel's range."""
    _range(r.cpu_shares, MIN_CPU_SHARES, MAX_CPU_SHARES, "cpu_shares")
    _range(r.cpu_period, MIN_CPU_PERIOD, MAX_CPU_PERIOD, "cpu_period", " microseconds")
    if r.cpu_quota != -1:
        _range(r.cpu_quota, MIN_CPU_QUOTA, MAX_CPU_QUOTA, "cpu_quota",
               " microseconds, or -1 for no limit")  # fmt: skip
    if r.memory_limit_in_bytes and r.memory_limit_in_bytes < MIN_MEMORY:
        raise InvalidArgument(
            f"memory_limit_in_bytes {r.memory_limit_in_bytes} is below the minimum of "
            f"{MIN_MEMORY} bytes (12 MiB) a container needs to start"
        )
    if r.memory_swap_limit_in_bytes < -1:
        raise InvalidArgument(
            f"memory_swap_limit_in_bytes {r.memory_swap_limit_in_bytes} is negative "
            "(-1: unlimited)"
        )
    if not MIN_OOM_SCORE_ADJ <= r.oom_score_adj <= MAX_OOM_SCORE_ADJ:
        raise InvalidArgument(
            f"oom_score_adj {r.oom_score_adj} is outside {MIN_OOM_SCORE_ADJ}-{MAX_OOM_SCORE_ADJ}"
        )
    for h in r.hugepage_limits:
        check_text(h.page_size, "hugepage page_size", 16)
    return Resources(
        cpu_period=r.cpu_period,
        cpu_quota=r.cpu_quota,
        cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory_limit_in_bytes,
        oom_score_adj=r.oom_score_adj,
        cpuset_cpus=cpuset(r.cpuset_cpus, "cpuset_cpus"),
        cpuset_mems=cpuset(r.cpuset_mems, "cpuset_mems"),
        hugepage_limits=tuple(HugepageLimit(h.page_size, h.limit) for h in r.hugepage_limits),
        unified=_unified(dict(r.unified)),
        memory_swap_limit_in_bytes=r.memory_swap_limit_in_bytes,
    )
