"""Applying one plugin's ContainerAdjustment to a container's OCI spec.

Each entry is claimed in ``Owners`` first (so two plugins setting the same thing
conflict), then checked against what this node and runtime can do, then written into
the spec. A key, destination or path starting with "-" removes that entry. What peapod
cannot honour here raises ``Unsupported``: block I/O and RDT classes (no class
configuration), CDI devices (no CDI registry), I/O priority, scheduling attributes,
memory policy and network devices (runc before 1.2 ignores them silently), kernel
memory limits (gone from the kernel), and cgroup options the node's cgroup version
lacks.
"""

from __future__ import annotations

import re
import resource
from dataclasses import dataclass
from typing import Any

from api import nri_pb2
from nri.owners import Owners
from oci.spec.resources import clamp_oom_score_adj

_PAGE_SIZE = re.compile(r"^[1-9][0-9]*(KB|MB|GB|TB|PB)$")
_HOOK_KINDS = (("prestart", "prestart"), ("create_runtime", "createRuntime"),
               ("create_container", "createContainer"), ("start_container", "startContainer"),
               ("poststart", "poststart"), ("poststop", "poststop"))
_NAMESPACES = frozenset({"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"})
_DEVICE_TYPES = frozenset({"c", "b", "u", "p"})


class Unsupported(Exception):
    """An adjustment this node or peapod cannot honour."""


class Invalid(Exception):
    """An adjustment that makes no sense (a relative mount destination, say)."""


@dataclass(frozen=True)
class NodeSupport:
    """What the node offers adjustments (from the daemon's facts)."""

    cgroup_v2: bool = False
    swap_accounting: bool = False
    hugetlb: bool = True
    own_oom_score_adj: int = 0
    can_raise_limits: bool = False  # CAP_SYS_RESOURCE: lower oom_score_adj, raise hard rlimits


def removal(key: str) -> tuple[str, bool]:
    """(key without the marker, whether it asks for removal)."""
    return (key[1:], True) if key.startswith("-") else (key, False)


class SpecAdjuster:
    """Applies plugins' adjustments, one after the other, to one container's spec."""

    def __init__(self, ctr_id: str, spec: dict[str, Any], annotations: dict[str, str],
                 owners: Owners, node: NodeSupport) -> None:
        self.ctr_id = ctr_id
        self.spec = spec
        self.annotations = annotations  # the container's, as plugins see them
        self.owners = owners
        self.node = node

    def apply(self, adj: nri_pb2.ContainerAdjustment, plugin: str) -> None:
        """Apply ``plugin``'s adjustment; Conflict, Unsupported or Invalid if it cannot."""
        self._unsupported(adj)
        self._annotations(adj, plugin)
        self._mounts(adj, plugin)
        self._env(adj, plugin)
        self._args(adj, plugin)
        self._hooks(adj, plugin)
        self._rlimits(adj, plugin)
        if adj.HasField("linux"):
            self._linux(adj.linux, plugin)

    # ---- what cannot be done here ---------------------------------------------
    def _unsupported(self, adj: nri_pb2.ContainerAdjustment) -> None:
        if adj.CDI_devices:
            raise Unsupported("CDI devices (peapod has no CDI registry)")
        if not adj.HasField("linux"):
            return
        lx = adj.linux
        for field, what in (("io_priority", "I/O priority"), ("scheduler", "scheduling "
                            "attributes"), ("memory_policy", "memory policy"),
                            ("rdt", "RDT settings")):
            if lx.HasField(field):
                raise Unsupported(f"{what} (the runtime, runc before 1.2, ignores them)")
        if lx.net_devices:
            raise Unsupported("network devices (the runtime, runc before 1.2, ignores them)")
        if lx.HasField("resources"):
            self._unsupported_resources(lx.resources)

    def _unsupported_resources(self, res: nri_pb2.LinuxResources) -> None:
        node = self.node
        if res.HasField("blockio_class"):
            raise Unsupported("block I/O class (peapod has no block I/O class configuration)")
        if res.HasField("rdt_class"):
            raise Unsupported("RDT class (peapod has no RDT configuration)")
        mem = res.memory
        if mem.HasField("kernel") or mem.HasField("kernel_tcp"):
            raise Unsupported("kernel memory limits (the kernel no longer has them)")
        if mem.HasField("swap") and not node.swap_accounting:
            raise Unsupported("a swap limit (swap accounting is off on this node)")
        if node.cgroup_v2 and (mem.HasField("swappiness") or mem.HasField("disable_oom_killer")):
            raise Unsupported("swappiness or disable_oom_killer (cgroup v1 only; this node "
                              "uses v2)")
        if res.hugepage_limits and not node.hugetlb:
            raise Unsupported("hugepage limits (no hugetlb cgroup the runtime can use)")
        if res.unified and not node.cgroup_v2:
            raise Unsupported("unified cgroup settings (cgroup v2 only; this node uses v1)")

    # ---- process -----------------------------------------------------------------
    def _process(self) -> dict[str, Any]:
        return self.spec.setdefault("process", {})

    def _annotations(self, adj: nri_pb2.ContainerAdjustment, plugin: str) -> None:
        spec_ann = self.spec.setdefault("annotations", {})
        items = sorted(adj.annotations.items(), key=lambda kv: not kv[0].startswith("-"))
        for raw, value in items:
            key, remove = removal(raw)
            if remove:
                self.owners.clear(self.ctr_id, "Annotations", plugin, key)
                self.annotations.pop(key, None)
                spec_ann.pop(key, None)
            else:
                self.owners.claim(self.ctr_id, "Annotations", plugin, key)
                self.annotations[key] = value
                spec_ann[key] = value

    def _mounts(self, adj: nri_pb2.ContainerAdjustment, plugin: str) -> None:
        mounts = self.spec.setdefault("mounts", [])
        for m in sorted(adj.mounts, key=lambda m: not m.destination.startswith("-")):
            dest, remove = removal(m.destination)
            if not dest.startswith("/"):
                raise Invalid(f"mount destination {dest!r} is not an absolute path")
            mounts[:] = [x for x in mounts if x.get("destination") != dest]
            if remove:
                self.owners.clear(self.ctr_id, "Mounts", plugin, dest)
                continue
            self.owners.claim(self.ctr_id, "Mounts", plugin, dest)
            entry: dict[str, Any] = {"destination": dest, "type": m.type or "bind",
                                     "source": m.source, "options": list(m.options)}
            if entry["type"] == "bind" and not any(o in ("bind", "rbind") for o in m.options):
                entry["options"].append("rbind")
            mounts.append(entry)

    def _env(self, adj: nri_pb2.ContainerAdjustment, plugin: str) -> None:
        env = self._process().setdefault("env", [])
        for kv in sorted(adj.env, key=lambda kv: not kv.key.startswith("-")):
            key, remove = removal(kv.key)
            if not key or "=" in key:
                raise Invalid(f"environment variable name {key!r}")
            at = next((i for i, e in enumerate(env) if e.split("=", 1)[0] == key), None)
            if remove:
                self.owners.clear(self.ctr_id, "Env", plugin, key)
                env[:] = [e for e in env if e.split("=", 1)[0] != key]
            else:
                self.owners.claim(self.ctr_id, "Env", plugin, key)
                if at is None:
                    env.append(f"{key}={kv.value}")
                else:  # in its place, once
                    env[:] = [e for i, e in enumerate(env)
                              if i == at or e.split("=", 1)[0] != key]
                    env[at] = f"{key}={kv.value}"

    def _args(self, adj: nri_pb2.ContainerAdjustment, plugin: str) -> None:
        if not adj.args:
            return
        args = list(adj.args)
        if args[0] == "":  # a leading "" clears what earlier plugins set
            args = args[1:]
        if not args:
            raise Invalid("an empty command line")
        self.owners.claim(self.ctr_id, "Args", plugin)
        self._process()["args"] = args

    def _hooks(self, adj: nri_pb2.ContainerAdjustment, plugin: str) -> None:
        if not adj.HasField("hooks"):
            return
        added = False
        for field, kind in _HOOK_KINDS:
            for h in getattr(adj.hooks, field):
                if not h.path.startswith("/"):
                    raise Invalid(f"OCI hook path {h.path!r} is not absolute")
                hook: dict[str, Any] = {"path": h.path}
                if h.args:
                    hook["args"] = list(h.args)
                if h.env:
                    hook["env"] = list(h.env)
                if h.HasField("timeout"):
                    hook["timeout"] = int(h.timeout.value)
                self.spec.setdefault("hooks", {}).setdefault(kind, []).append(hook)
                added = True
        if added:
            self.owners.add_to(self.ctr_id, "OciHooks", plugin)

    def _rlimits(self, adj: nri_pb2.ContainerAdjustment, plugin: str) -> None:
        limits = self._process().setdefault("rlimits", [])
        for r in adj.rlimits:
            number = getattr(resource, r.type, None) if r.type.startswith("RLIMIT_") else None
            if not isinstance(number, int):
                raise Invalid(f"rlimit type {r.type!r}")
            if r.soft > r.hard:
                raise Invalid(f"{r.type} soft limit {r.soft} above its hard limit {r.hard}")
            own_hard = resource.getrlimit(number)[1]
            if (not self.node.can_raise_limits and own_hard != resource.RLIM_INFINITY
                    and r.hard > own_hard):
                raise Unsupported(f"{r.type} hard limit {r.hard} above peapod's own "
                                  f"({own_hard}; raising it needs CAP_SYS_RESOURCE)")
            self.owners.claim(self.ctr_id, "Rlimits", plugin, r.type)
            limits[:] = [x for x in limits if x.get("type") != r.type]
            limits.append({"type": r.type, "hard": r.hard, "soft": r.soft})

    # ---- linux -------------------------------------------------------------------------
    def _linux(self, lx: nri_pb2.LinuxContainerAdjustment, plugin: str) -> None:
        linux = self.spec.setdefault("linux", {})
        self._devices(lx, linux, plugin)
        if lx.HasField("resources"):
            self._resources(lx.resources, linux.setdefault("resources", {}), plugin)
        if lx.cgroups_path:
            self.owners.claim(self.ctr_id, "CgroupsPath", plugin)
            linux["cgroupsPath"] = lx.cgroups_path
        if lx.HasField("oom_score_adj"):
            self.owners.claim(self.ctr_id, "OomScoreAdj", plugin)
            self._process()["oomScoreAdj"] = clamp_oom_score_adj(
                lx.oom_score_adj.value, self.node.own_oom_score_adj, self.node.can_raise_limits)
        if lx.HasField("seccomp_policy"):
            self.owners.claim(self.ctr_id, "SeccompPolicy", plugin)
            linux["seccomp"] = seccomp(lx.seccomp_policy)
        for ns in lx.namespaces:
            kind, remove = removal(ns.type)
            if kind not in _NAMESPACES:
                raise Invalid(f"namespace type {kind!r}")
            self.owners.claim(self.ctr_id, "Namespace", plugin, kind)
            spaces = [n for n in linux.setdefault("namespaces", []) if n.get("type") != kind]
            if not remove:
                spaces.append({"type": kind, **({"path": ns.path} if ns.path else {})})
            linux["namespaces"] = spaces
        for raw, value in lx.sysctl.items():
            key, remove = removal(raw)
            sysctl = linux.setdefault("sysctl", {})
            if remove:
                self.owners.clear(self.ctr_id, "Sysctl", plugin, key)
                sysctl.pop(key, None)
            else:
                self.owners.claim(self.ctr_id, "Sysctl", plugin, key)
                sysctl[key] = value

    def _devices(self, lx: nri_pb2.LinuxContainerAdjustment, linux: dict[str, Any],
                 plugin: str) -> None:
        for d in lx.devices:
            path, remove = removal(d.path)
            if not path.startswith("/dev/"):
                raise Invalid(f"device path {path!r} is not under /dev")
            devices = [x for x in linux.setdefault("devices", []) if x.get("path") != path]
            linux["devices"] = devices
            if remove:
                self.owners.clear(self.ctr_id, "Devices", plugin, path)
                continue
            if d.type not in _DEVICE_TYPES:
                raise Invalid(f"device {path} has type {d.type!r}, not one of c, b, u, p")
            self.owners.claim(self.ctr_id, "Devices", plugin, path)
            dev: dict[str, Any] = {"path": path, "type": d.type, "major": d.major,
                                   "minor": d.minor}
            if d.HasField("file_mode"):
                dev["fileMode"] = d.file_mode.value
            if d.HasField("uid"):
                dev["uid"] = d.uid.value
            if d.HasField("gid"):
                dev["gid"] = d.gid.value
            devices.append(dev)
            rules = linux.setdefault("resources", {}).setdefault("devices", [])
            rules.append({"allow": True, "type": d.type, "major": d.major, "minor": d.minor,
                          "access": "rwm"})

    def _resources(self, res: nri_pb2.LinuxResources, out: dict[str, Any], plugin: str) -> None:
        claim = self.owners.claim
        mem = res.memory
        for field, key, owner in (("limit", "limit", "MemLimit"),
                                  ("reservation", "reservation", "MemReservation"),
                                  ("swap", "swap", "MemSwapLimit"),
                                  ("swappiness", "swappiness", "MemSwappiness"),
                                  ("disable_oom_killer", "disableOOMKiller",
                                   "MemDisableOomKiller"),
                                  ("use_hierarchy", "useHierarchy", "MemUseHierarchy")):
            if mem.HasField(field):
                claim(self.ctr_id, owner, plugin)
                out.setdefault("memory", {})[key] = getattr(mem, field).value
        cpu = res.cpu
        for field, key, owner in (("shares", "shares", "CPUShares"),
                                  ("quota", "quota", "CPUQuota"),
                                  ("period", "period", "CPUPeriod"),
                                  ("realtime_runtime", "realtimeRuntime", "CPURealtimeRuntime"),
                                  ("realtime_period", "realtimePeriod", "CPURealtimePeriod")):
            if cpu.HasField(field):
                claim(self.ctr_id, owner, plugin)
                out.setdefault("cpu", {})[key] = getattr(cpu, field).value
        if cpu.cpus:
            claim(self.ctr_id, "CPUSetCPUs", plugin)
            out.setdefault("cpu", {})["cpus"] = cpu.cpus
        if cpu.mems:
            claim(self.ctr_id, "CPUSetMems", plugin)
            out.setdefault("cpu", {})["mems"] = cpu.mems
        for h in res.hugepage_limits:
            if not _PAGE_SIZE.match(h.page_size):
                raise Invalid(f"hugepage page size {h.page_size!r} (2MB or 1GB, say)")
            claim(self.ctr_id, "HugepageLimits", plugin, h.page_size)
            limits = [x for x in out.get("hugepageLimits", []) if x["pageSize"] != h.page_size]
            out["hugepageLimits"] = [*limits, {"pageSize": h.page_size, "limit": h.limit}]
        for key, value in res.unified.items():
            claim(self.ctr_id, "CgroupsUnified", plugin, key)
            out.setdefault("unified", {})[key] = value
        if res.HasField("pids"):
            claim(self.ctr_id, "PidsLimit", plugin)
            out["pids"] = {"limit": res.pids.limit}
        for rule in res.devices:
            entry: dict[str, Any] = {"allow": rule.allow, "type": rule.type or "a",
                                     "access": rule.access or "rwm"}
            if rule.HasField("major"):
                entry["major"] = rule.major.value
            if rule.HasField("minor"):
                entry["minor"] = rule.minor.value
            out.setdefault("devices", []).append(entry)


def seccomp(policy: nri_pb2.LinuxSeccomp) -> dict[str, Any]:
    """NRI's seccomp policy as the OCI spec's ``linux.seccomp``."""
    out: dict[str, Any] = {"defaultAction": policy.default_action}
    if policy.HasField("default_errno"):
        out["defaultErrnoRet"] = policy.default_errno.value
    if policy.architectures:
        out["architectures"] = list(policy.architectures)
    if policy.flags:
        out["flags"] = list(policy.flags)
    if policy.listener_path:
        out["listenerPath"] = policy.listener_path
    if policy.listener_metadata:
        out["listenerMetadata"] = policy.listener_metadata
    syscalls = []
    for s in policy.syscalls:
        call: dict[str, Any] = {"names": list(s.names), "action": s.action}
        if s.HasField("errno_ret"):
            call["errnoRet"] = s.errno_ret.value
        if s.args:
            call["args"] = [{"index": a.index, "value": a.value, "valueTwo": a.value_two,
                             "op": a.op} for a in s.args]
        syscalls.append(call)
    if syscalls:
        out["syscalls"] = syscalls
    return out
