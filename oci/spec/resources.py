"""Cgroup placement and limits (``linux.resources``, ``linux.cgroupsPath``, OOM score)."""

from __future__ import annotations

import logging
import posixpath
import re
from typing import Any

from base.errors import InvalidArgument
from oci.spec.inputs import CgroupDriver, DaemonFacts, Resources

log = logging.getLogger(__name__)

_PAGE_SIZE = re.compile(r"^[1-9][0-9]*(KB|MB|GB|TB|PB)$")
_swap_warned = False
_hugetlb_warned = False


def cgroups_path(driver: CgroupDriver, parent: str, container_id: str, prefix: str) -> str:
    """``linux.cgroupsPath`` of a container under its pod's cgroup.

    cgroupfs: "<parent>/<id>" as an absolute path; systemd: "<parent slice>:<prefix>:<id>",
    which runc turns into the unit <prefix>-<id>.scope inside the slice.
    """
    if not container_id or "/" in container_id or ":" in container_id:
        raise InvalidArgument(f"container id {container_id!r} cannot name a cgroup")
    if driver is CgroupDriver.SYSTEMD:
        slice_name = posixpath.basename(parent.rstrip("/")) if parent else "system.slice"
        if not slice_name.endswith(".slice"):
            raise InvalidArgument(
                f"cgroup parent {parent!r} is not a systemd slice (name ending in .slice); "
                "configure the kubelet and peapod with the same cgroup driver"
            )
        return f"{slice_name}:{prefix}:{container_id}"
    if parent.endswith(".slice"):
        raise InvalidArgument(
            f"cgroup parent {parent!r} is a systemd slice but peapod uses cgroupfs; "
            "configure the kubelet and peapod with the same cgroup driver"
        )
    parts = [part for part in parent.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise InvalidArgument(f"cgroup parent {parent!r} must not contain . or .. components")
    return "/" + "/".join([*(parts or ["peapod"]), container_id])


def clamp_oom_score_adj(wanted: int, own: int, can_lower: bool) -> int:
    """An oom_score_adj the daemon may set: within [-1000, 1000] and, without
    CAP_SYS_RESOURCE, no lower than the daemon's own (the kernel refuses that)."""
    value = max(-1000, min(1000, wanted))
    return value if can_lower else max(value, own)


def _cpu(res: Resources) -> dict[str, Any]:
    cpu: dict[str, Any] = {}
    if res.cpu_shares:
        if res.cpu_shares < 2:
            raise InvalidArgument(f"cpu_shares {res.cpu_shares} is below the minimum of 2")
        cpu["shares"] = res.cpu_shares
    if res.cpu_quota:
        cpu["quota"] = res.cpu_quota
    if res.cpu_period:
        if res.cpu_period < 0:
            raise InvalidArgument(f"cpu_period {res.cpu_period} must not be negative")
        cpu["period"] = res.cpu_period
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    return cpu


def _memory(res: Resources, daemon: DaemonFacts) -> dict[str, Any]:
    global _swap_warned
    memory: dict[str, Any] = {}
    limit = res.memory_limit_in_bytes
    if limit < 0:
        raise InvalidArgument(f"memory_limit_in_bytes {limit} must not be negative")
    if limit:
        memory["limit"] = limit
    swap = res.memory_swap_limit_in_bytes
    if not daemon.swap_accounting:
        if swap and not _swap_warned:
            _swap_warned = True
            log.warning("swap accounting is off on this node; swap limits are ignored")
        return memory
    if swap:
        if limit and 0 < swap < limit:
            raise InvalidArgument(
                f"memory_swap_limit_in_bytes {swap} is below memory_limit_in_bytes {limit}; "
                "it counts memory plus swap"
            )
        memory["swap"] = swap
    elif limit:
        memory["swap"] = limit  # no swap, as the kubelet asks unless swap is configured
    return memory


def _hugepages(res: Resources) -> list[dict[str, Any]]:
    limits = []
    for item in res.hugepage_limits:
        if not _PAGE_SIZE.match(item.page_size):
            raise InvalidArgument(
                f"hugepage page_size {item.page_size!r} must look like 2MB or 1GB"
            )
        limits.append({"pageSize": item.page_size, "limit": item.limit})
    return limits


def _warn_no_hugetlb() -> None:
    """Hugepage limits are left out where runc has no hugetlb cgroup (as CRI-O does): the
    kubelet sends them for every page size the kernel has, and runc would refuse them."""
    global _hugetlb_warned
    if not _hugetlb_warned:
        _hugetlb_warned = True
        log.warning("no hugetlb cgroup hierarchy the runtime can use; hugepage limits are ignored")


def linux_resources(
    res: Resources, daemon: DaemonFacts, devices: list[dict[str, Any]]
) -> dict[str, Any]:
    """``linux.resources`` for the request, with the given device cgroup rules."""
    out: dict[str, Any] = {"devices": devices}
    if cpu := _cpu(res):
        out["cpu"] = cpu
    if memory := _memory(res, daemon):
        out["memory"] = memory
    if daemon.pids_limit > 0:
        out["pids"] = {"limit": daemon.pids_limit}
    if hugepages := _hugepages(res):
        if daemon.hugetlb:
            out["hugepageLimits"] = hugepages
        else:
            _warn_no_hugetlb()
    if res.unified:
        if not daemon.cgroup_v2:
            raise InvalidArgument(
                "unified (cgroup v2) resources were requested but this node uses cgroup v1"
            )
        out["unified"] = dict(res.unified)
    return out
