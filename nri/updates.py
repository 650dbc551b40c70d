"""Resource updates plugins ask for: collected per container, then as peapod's Resources.

A plugin may ask, in answer to an event or on its own (UpdateContainers), that other
containers get new resources. Within one event each field of each container belongs
to the first plugin that sets it (``nri.owners``). peapod updates a running container
through the runtime's ``update``, which takes what CRI's UpdateContainerResources
takes: CPU shares, quota, period and sets, memory and swap limits, hugepage limits
and unified cgroup v2 settings; anything else is ``Unsupported``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from api import nri_pb2
from nri.adjust import Unsupported
from nri.owners import Owners
from oci.spec.inputs import HugepageLimit, Resources


@dataclass
class Pending:
    """The update of one container: who asked, and what is to apply."""

    container_id: str
    resources: Resources = field(default_factory=Resources)
    plugins: list[str] = field(default_factory=list)
    ignore_failure: bool = True
    requests: list[nri_pb2.ContainerUpdate] = field(default_factory=list)


def merge_resources(base: Resources, res: nri_pb2.LinuxResources, ctr_id: str, plugin: str,
                    owners: Owners) -> Resources:
    """``base`` with the fields ``res`` sets; Conflict or Unsupported."""
    mem, cpu = res.memory, res.cpu
    for name in ("reservation", "kernel", "kernel_tcp", "swappiness", "disable_oom_killer",
                 "use_hierarchy"):
        if mem.HasField(name):
            raise Unsupported(f"updating memory {name} (the runtime's update cannot)")
    for name in ("realtime_runtime", "realtime_period"):
        if cpu.HasField(name):
            raise Unsupported(f"updating cpu {name} (the runtime's update cannot)")
    if res.HasField("blockio_class") or res.HasField("rdt_class") or res.HasField("pids"):
        raise Unsupported("updating block I/O class, RDT class or pids limit")
    if res.devices:
        raise Unsupported("updating device cgroup rules")
    changes: dict[str, object] = {}
    for present, owner, key, value in (
        (mem.HasField("limit"), "MemLimit", "memory_limit_in_bytes", mem.limit.value),
        (mem.HasField("swap"), "MemSwapLimit", "memory_swap_limit_in_bytes", mem.swap.value),
        (cpu.HasField("shares"), "CPUShares", "cpu_shares", cpu.shares.value),
        (cpu.HasField("quota"), "CPUQuota", "cpu_quota", cpu.quota.value),
        (cpu.HasField("period"), "CPUPeriod", "cpu_period", cpu.period.value),
        (bool(cpu.cpus), "CPUSetCPUs", "cpuset_cpus", cpu.cpus),
        (bool(cpu.mems), "CPUSetMems", "cpuset_mems", cpu.mems),
    ):
        if present:
            owners.claim(ctr_id, owner, plugin)
            changes[key] = value
    if res.hugepage_limits:
        sizes = {h.page_size: h for h in base.hugepage_limits}
        for h in res.hugepage_limits:
            owners.claim(ctr_id, "HugepageLimits", plugin, h.page_size)
            sizes[h.page_size] = HugepageLimit(page_size=h.page_size, limit=h.limit)
        changes["hugepage_limits"] = tuple(sizes.values())
    if res.unified:
        for key in res.unified:
            owners.claim(ctr_id, "CgroupsUnified", plugin, key)
        changes["unified"] = {**base.unified, **res.unified}
    return replace(base, **changes)  # type: ignore[arg-type]


class UpdateSet:
    """The updates of one event (or one UpdateContainers call), by container."""

    def __init__(self, owners: Owners) -> None:
        self.owners = owners
        self.by_container: dict[str, Pending] = {}

    def add(self, updates: list[nri_pb2.ContainerUpdate], plugin: str, forbid: str = "") -> None:
        """Take ``plugin``'s updates; ``forbid`` is a container it may not update (the one
        being created, which it adjusts instead). Conflict or Unsupported."""
        for u in updates:
            if forbid and u.container_id == forbid:
                raise Unsupported(f"an update of container {forbid[:12]} while it is being "
                                  "created (adjust it instead)")
            pending = self.by_container.setdefault(u.container_id, Pending(u.container_id))
            if u.linux.HasField("resources"):
                pending.resources = merge_resources(pending.resources, u.linux.resources,
                                                    u.container_id, plugin, self.owners)
            pending.plugins.append(plugin)
            pending.ignore_failure = pending.ignore_failure and u.ignore_failure
            pending.requests.append(u)

    def messages(self) -> list[nri_pb2.ContainerUpdate]:
        return [r for p in self.by_container.values() for r in p.requests]
