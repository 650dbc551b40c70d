"""peapod's pods and containers as NRI messages (what plugins are shown).

A container is shown from its record and its OCI spec (arguments, environment,
mounts, hooks, resources... as the runtime gets them); resources move both ways
between the spec's ``linux.resources`` and NRI's ``LinuxResources``.
"""

from __future__ import annotations

from typing import Any

from api import nri_pb2
from oci.container.record import CREATED, EXITED, RUNNING, ContainerRecord
from oci.spec.inputs import Resources
from sandbox.record import SandboxRecord

_STATES = {
    CREATED: nri_pb2.ContainerState.Value("CONTAINER_CREATED"),
    RUNNING: nri_pb2.ContainerState.Value("CONTAINER_RUNNING"),
    EXITED: nri_pb2.ContainerState.Value("CONTAINER_STOPPED"),
}


def pod_message(rec: SandboxRecord) -> nri_pb2.PodSandbox:
    """The pod as plugins see it."""
    pod = nri_pb2.PodSandbox(
        id=rec.id, name=rec.metadata.name, uid=rec.metadata.uid,
        namespace=rec.metadata.namespace, labels=rec.labels, annotations=rec.annotations,
        runtime_handler=rec.runtime_handler, ips=rec.ips,
    )
    if rec.infra:
        pod.pid = int(rec.infra.get("pid", 0))
    pod.linux.cgroup_parent = rec.cgroup_parent
    pod.linux.cgroups_path = rec.cgroup_parent
    for kind, path in sorted(rec.ns_paths.items()):
        pod.linux.namespaces.add(type="network" if kind == "net" else kind, path=path)
    return pod


def bare_pod(pod_id: str) -> nri_pb2.PodSandbox:
    """A pod peapod no longer knows (removed meanwhile): its id only."""
    return nri_pb2.PodSandbox(id=pod_id)


def container_message(rec: ContainerRecord, spec: dict[str, Any] | None) -> nri_pb2.Container:
    """The container as plugins see it; ``spec`` None shows the record alone."""
    ctr = nri_pb2.Container(
        id=rec.id, pod_sandbox_id=rec.sandbox_id, name=rec.metadata_name,
        state=_STATES.get(rec.state, 0), labels=rec.labels, annotations=rec.annotations,
        pid=rec.pid if rec.state == RUNNING else 0, created_at=rec.created_at,
        started_at=rec.started_at, finished_at=rec.finished_at, exit_code=rec.exit_code,
        status_reason=rec.reason, status_message=rec.message,
    )
    ctr.image.name = rec.image
    ctr.image.config_digest = rec.image_id
    if "@" in rec.image_ref:
        ctr.image.digest = rec.image_ref.rsplit("@", 1)[1]
    if rec.user:
        ctr.user.uid = int(rec.user.get("uid", 0))
        ctr.user.gid = int(rec.user.get("gid", 0))
        ctr.user.additional_gids.extend(int(g) for g in rec.user.get("additional_gids", []))
    if spec:
        _from_spec(ctr, spec)
    return ctr


def _from_spec(ctr: nri_pb2.Container, spec: dict[str, Any]) -> None:
    process = spec.get("process") or {}
    ctr.args.extend(str(a) for a in process.get("args") or [])
    ctr.env.extend(str(e) for e in process.get("env") or [])
    for r in process.get("rlimits") or []:
        ctr.rlimits.add(type=r["type"], hard=int(r.get("hard", 0)), soft=int(r.get("soft", 0)))
    for m in spec.get("mounts") or []:
        ctr.mounts.add(destination=m.get("destination", ""), type=m.get("type", ""),
                       source=m.get("source", ""), options=m.get("options") or [])
    for kind, field in (("prestart", "prestart"), ("createRuntime", "create_runtime"),
                        ("createContainer", "create_container"),
                        ("startContainer", "start_container"), ("poststart", "poststart"),
                        ("poststop", "poststop")):
        for h in (spec.get("hooks") or {}).get(kind) or []:
            hook = getattr(ctr.hooks, field).add(path=h["path"], args=h.get("args") or [],
                                                env=h.get("env") or [])
            if "timeout" in h:
                hook.timeout.value = int(h["timeout"])
    linux = spec.get("linux") or {}
    out = ctr.linux
    for ns in linux.get("namespaces") or []:
        out.namespaces.add(type=ns["type"], path=ns.get("path", ""))
    for d in linux.get("devices") or []:
        dev = out.devices.add(path=d["path"], type=d.get("type", ""), major=int(d.get("major", 0)),
                              minor=int(d.get("minor", 0)))
        if "fileMode" in d:
            dev.file_mode.value = int(d["fileMode"])
        if "uid" in d:
            dev.uid.value = int(d["uid"])
        if "gid" in d:
            dev.gid.value = int(d["gid"])
    out.resources.CopyFrom(resources_message(linux.get("resources") or {}))
    if "oomScoreAdj" in process:
        out.oom_score_adj.value = int(process["oomScoreAdj"])
    out.cgroups_path = str(linux.get("cgroupsPath", ""))
    out.sysctl.update({str(k): str(v) for k, v in (linux.get("sysctl") or {}).items()})


def resources_message(res: dict[str, Any]) -> nri_pb2.LinuxResources:
    """An OCI ``linux.resources`` object as NRI's ``LinuxResources``."""
    out = nri_pb2.LinuxResources()
    mem = res.get("memory") or {}
    for key, field in (("limit", "limit"), ("reservation", "reservation"), ("swap", "swap"),
                       ("kernel", "kernel"), ("kernelTCP", "kernel_tcp")):
        if key in mem:
            getattr(out.memory, field).value = int(mem[key])
    if "swappiness" in mem:
        out.memory.swappiness.value = int(mem["swappiness"])
    if "disableOOMKiller" in mem:
        out.memory.disable_oom_killer.value = bool(mem["disableOOMKiller"])
    if "useHierarchy" in mem:
        out.memory.use_hierarchy.value = bool(mem["useHierarchy"])
    cpu = res.get("cpu") or {}
    for key, field in (("shares", "shares"), ("quota", "quota"), ("period", "period"),
                       ("realtimeRuntime", "realtime_runtime"),
                       ("realtimePeriod", "realtime_period")):
        if key in cpu:
            getattr(out.cpu, field).value = int(cpu[key])
    out.cpu.cpus = str(cpu.get("cpus", ""))
    out.cpu.mems = str(cpu.get("mems", ""))
    for h in res.get("hugepageLimits") or []:
        out.hugepage_limits.add(page_size=h["pageSize"], limit=int(h["limit"]))
    out.unified.update({str(k): str(v) for k, v in (res.get("unified") or {}).items()})
    for d in res.get("devices") or []:
        rule = out.devices.add(allow=bool(d.get("allow")), type=d.get("type", ""),
                               access=d.get("access", ""))
        if d.get("major") is not None:
            rule.major.value = int(d["major"])
        if d.get("minor") is not None:
            rule.minor.value = int(d["minor"])
    if "pids" in res:
        out.pids.limit = int(res["pids"].get("limit", 0))
    return out


def cri_resources_message(res: Resources) -> nri_pb2.LinuxResources:
    """A CRI resource update (zero: unchanged) as NRI's ``LinuxResources``."""
    out = nri_pb2.LinuxResources()
    if res.memory_limit_in_bytes:
        out.memory.limit.value = res.memory_limit_in_bytes
    if res.memory_swap_limit_in_bytes:
        out.memory.swap.value = res.memory_swap_limit_in_bytes
    if res.cpu_shares:
        out.cpu.shares.value = res.cpu_shares
    if res.cpu_quota:
        out.cpu.quota.value = res.cpu_quota
    if res.cpu_period:
        out.cpu.period.value = res.cpu_period
    out.cpu.cpus = res.cpuset_cpus
    out.cpu.mems = res.cpuset_mems
    for h in res.hugepage_limits:
        out.hugepage_limits.add(page_size=h.page_size, limit=h.limit)
    out.unified.update(dict(res.unified))
    return out
