"""CRI container messages to domain requests, and container records back to messages."""

from __future__ import annotations

import json
from typing import Any

from api import api_pb2 as pb
from base.errors import InvalidArgument
from oci.container.create import CreateRequest
from oci.container.manager import ContainerFilter
from oci.container.record import CREATED, EXITED, RUNNING, ContainerRecord
from oci.spec.inputs import (
    Capabilities,
    ContainerRequest,
    Device,
    HugepageLimit,
    Mount,
    MountPropagation,
    NamespaceMode,
    NamespaceOptions,
    Resources,
    SeccompProfile,
    SeccompProfileType,
    SecurityContext,
    SupplementalGroupsPolicy,
)
from oci.spec.seccomp import profile_from_legacy_path

_PROPAGATION = {
    pb.PROPAGATION_PRIVATE: MountPropagation.PRIVATE,
    pb.PROPAGATION_HOST_TO_CONTAINER: MountPropagation.HOST_TO_CONTAINER,
    pb.PROPAGATION_BIDIRECTIONAL: MountPropagation.BIDIRECTIONAL,
}
_NS_MODE = {
    pb.POD: NamespaceMode.POD,
    pb.CONTAINER: NamespaceMode.CONTAINER,
    pb.NODE: NamespaceMode.NODE,
    pb.TARGET: NamespaceMode.TARGET,
}
_SECCOMP = {
    pb.SecurityProfile.RuntimeDefault: SeccompProfileType.RUNTIME_DEFAULT,
    pb.SecurityProfile.Unconfined: SeccompProfileType.UNCONFINED,
    pb.SecurityProfile.Localhost: SeccompProfileType.LOCALHOST,
}
_STATE = {CREATED: pb.CONTAINER_CREATED, RUNNING: pb.CONTAINER_RUNNING, EXITED: pb.CONTAINER_EXITED}
_STATE_BACK = {v: k for k, v in _STATE.items()}


# ---- signals ---------------------------------------------------------------


def signal_name(value: int) -> str:
    """The signal name ("SIGTERM") of a CRI Signal; "" for the runtime default."""
    if value == pb.SIGNAL_RUNTIME_DEFAULT:
        return ""
    try:
        name = pb.Signal.Name(value)[len("SIGNAL_") :]
    except ValueError:
        raise InvalidArgument(f"stop_signal {value} is not a known signal") from None
    if "PLUS" in name or "MINUS" in name:
        raise InvalidArgument(
            f"stop_signal {name}: real-time signals other than SIGRTMIN and SIGRTMAX "
            "are not supported"
        )
    return name


def cri_signal(name: str) -> int:
    """The CRI Signal for a stored signal name; the runtime default if it has none."""
    key = f"SIGNAL_{name}"
    return pb.Signal.Value(key) if key in pb.Signal.keys() else pb.SIGNAL_RUNTIME_DEFAULT  # noqa: SIM118


# ---- requests ----------------------------------------------------------------


def _mount(m: pb.Mount) -> Mount:
    if m.HasField("image") and m.image.image:
        raise InvalidArgument(
            f"mount {m.container_path!r}: image volumes are not supported by peapod"
        )
    if m.uidMappings or m.gidMappings:
        raise InvalidArgument(
            f"mount {m.container_path!r}: ID-mapped mounts (user namespaces) are not supported"
        )
    return Mount(
        container_path=m.container_path,
        host_path=m.host_path,
        readonly=m.readonly,
        propagation=_PROPAGATION.get(m.propagation, MountPropagation.PRIVATE),
        selinux_relabel=m.selinux_relabel,
        recursive_read_only=m.recursive_read_only,
        options=tuple(m.mount_options),
    )


def resources(r: pb.LinuxContainerResources) -> Resources:
    return Resources(
        cpu_period=r.cpu_period,
        cpu_quota=r.cpu_quota,
        cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory_limit_in_bytes,
        oom_score_adj=r.oom_score_adj,
        cpuset_cpus=r.cpuset_cpus,
        cpuset_mems=r.cpuset_mems,
        hugepage_limits=tuple(HugepageLimit(h.page_size, h.limit) for h in r.hugepage_limits),
        unified=dict(r.unified),
        memory_swap_limit_in_bytes=r.memory_swap_limit_in_bytes,
    )


def _seccomp(sc: pb.LinuxContainerSecurityContext) -> SeccompProfile | None:
    if sc.HasField("seccomp"):
        return SeccompProfile(_SECCOMP[sc.seccomp.profile_type], sc.seccomp.localhost_ref)
    return profile_from_legacy_path(sc.seccomp_profile_path)


def _security(sc: pb.LinuxContainerSecurityContext) -> SecurityContext:
    ns = sc.namespace_options
    if ns.HasField("userns_options") and ns.userns_options.mode != pb.NODE:
        raise InvalidArgument("user namespaces are not supported by peapod")
    if sc.capabilities.add_ambient_capabilities:
        raise InvalidArgument("ambient capabilities are not supported by peapod")
    return SecurityContext(
        capabilities=Capabilities(
            add=tuple(sc.capabilities.add_capabilities),
            drop=tuple(sc.capabilities.drop_capabilities),
        ),
        privileged=sc.privileged,
        namespace_options=NamespaceOptions(
            network=_NS_MODE[ns.network],
            pid=_NS_MODE[ns.pid],
            ipc=_NS_MODE[ns.ipc],
            target_id=ns.target_id,
        ),
        run_as_user=sc.run_as_user.value if sc.HasField("run_as_user") else None,
        run_as_username=sc.run_as_username,
        run_as_group=sc.run_as_group.value if sc.HasField("run_as_group") else None,
        readonly_rootfs=sc.readonly_rootfs,
        supplemental_groups=tuple(sc.supplemental_groups),
        supplemental_groups_policy=(
            SupplementalGroupsPolicy.STRICT
            if sc.supplemental_groups_policy == pb.Strict
            else SupplementalGroupsPolicy.MERGE
        ),
        no_new_privs=sc.no_new_privs,
        # The kubelet always sends the lists it wants; empty means the defaults.
        masked_paths=tuple(sc.masked_paths) or None,
        readonly_paths=tuple(sc.readonly_paths) or None,
        seccomp=_seccomp(sc),
    )


def _env(kv: pb.KeyValue) -> tuple[str, str]:
    try:
        value = kv.value.decode() if isinstance(kv.value, bytes) else str(kv.value)
    except UnicodeDecodeError:
        raise InvalidArgument(f"environment variable {kv.key!r} is not valid UTF-8") from None
    return kv.key, value


def create_request(req: pb.CreateContainerRequest) -> CreateRequest:
    """The domain request of CreateContainer; InvalidArgument for unusable fields."""
    cfg = req.config
    if not req.pod_sandbox_id:
        raise InvalidArgument("CreateContainerRequest.pod_sandbox_id is empty")
    if not cfg.metadata.name:
        raise InvalidArgument("CreateContainerRequest.config.metadata.name is empty")
    if not cfg.image.image:
        raise InvalidArgument("CreateContainerRequest.config.image.image is empty")
    if cfg.CDI_devices:
        raise InvalidArgument("CDI devices are not supported by peapod")
    linux = cfg.linux
    container = ContainerRequest(
        id="",
        name=cfg.metadata.name,
        command=tuple(cfg.command),
        args=tuple(cfg.args),
        working_dir=cfg.working_dir,
        envs=tuple(_env(kv) for kv in cfg.envs),
        mounts=tuple(_mount(m) for m in cfg.mounts),
        devices=tuple(
            Device(d.container_path, d.host_path, d.permissions or "rwm") for d in cfg.devices
        ),
        labels=dict(cfg.labels),
        annotations=dict(cfg.annotations),
        tty=cfg.tty,
        stdin=cfg.stdin,
        stdin_once=cfg.stdin_once,
        resources=resources(linux.resources),
        security=_security(linux.security_context),
    )
    return CreateRequest(
        pod_id=req.pod_sandbox_id,
        container=container,
        attempt=cfg.metadata.attempt,
        image=cfg.image.image,
        image_annotations=dict(cfg.image.annotations),
        user_specified_image=cfg.image.user_specified_image,
        log_path=cfg.log_path,
        stop_signal=signal_name(cfg.stop_signal),
    )


def container_filter(f: pb.ContainerFilter) -> ContainerFilter | None:
    """The domain filter; None when the state asked for is one no container has."""
    state: str | None = None
    if f.HasField("state"):
        state = _STATE_BACK.get(f.state.state)
        if state is None:
            return None
    return ContainerFilter(
        id=f.id, state=state, pod_id=f.pod_sandbox_id, labels=dict(f.label_selector)
    )


# ---- responses ---------------------------------------------------------------


def _image_spec(rec: ContainerRecord) -> pb.ImageSpec:
    return pb.ImageSpec(
        image=rec.image,
        annotations=rec.image_annotations,
        user_specified_image=rec.user_specified_image,
    )


def to_pb_container(rec: ContainerRecord) -> pb.Container:
    return pb.Container(
        id=rec.id,
        pod_sandbox_id=rec.sandbox_id,
        metadata=pb.ContainerMetadata(name=rec.metadata_name, attempt=rec.attempt),
        image=_image_spec(rec),
        image_ref=rec.image_ref,
        image_id=rec.image_id,
        state=_STATE[rec.state],
        created_at=rec.created_at,
        labels=rec.labels,
        annotations=rec.annotations,
    )


def pb_resources(res: dict[str, Any]) -> pb.LinuxContainerResources:
    return pb.LinuxContainerResources(
        cpu_period=res.get("cpu_period", 0),
        cpu_quota=res.get("cpu_quota", 0),
        cpu_shares=res.get("cpu_shares", 0),
        memory_limit_in_bytes=res.get("memory_limit_in_bytes", 0),
        oom_score_adj=res.get("oom_score_adj", 0),
        cpuset_cpus=res.get("cpuset_cpus", ""),
        cpuset_mems=res.get("cpuset_mems", ""),
        hugepage_limits=[
            pb.HugepageLimit(page_size=h["page_size"], limit=h["limit"])
            for h in res.get("hugepage_limits", [])
        ],
        unified=res.get("unified", {}),
        memory_swap_limit_in_bytes=res.get("memory_swap_limit_in_bytes", 0),
    )


def _pb_mount(m: dict[str, Any]) -> pb.Mount:
    return pb.Mount(
        container_path=m["container_path"],
        host_path=m["host_path"],
        readonly=m["readonly"],
        selinux_relabel=m["selinux_relabel"],
        propagation=pb.MountPropagation.Value("PROPAGATION_" + m["propagation"]),
        recursive_read_only=m["recursive_read_only"],
    )


def to_pb_status(rec: ContainerRecord) -> pb.ContainerStatus:
    status = pb.ContainerStatus(
        id=rec.id,
        metadata=pb.ContainerMetadata(name=rec.metadata_name, attempt=rec.attempt),
        state=_STATE[rec.state],
        created_at=rec.created_at,
        started_at=rec.started_at,
        finished_at=rec.finished_at,
        exit_code=rec.exit_code,
        image=_image_spec(rec),
        image_ref=rec.image_ref,
        image_id=rec.image_id,
        reason=rec.reason,
        message=rec.message,
        labels=rec.labels,
        annotations=rec.annotations,
        mounts=[_pb_mount(m) for m in rec.mounts],
        log_path=rec.log_path,
        resources=pb.ContainerResources(linux=pb_resources(rec.resources)),
        stop_signal=cri_signal(rec.stop_signal),
    )
    if rec.user:
        status.user.linux.uid = rec.user["uid"]
        status.user.linux.gid = rec.user["gid"]
        status.user.linux.supplemental_groups.extend(rec.user.get("additional_gids", []))
    return status


def verbose_info(rec: ContainerRecord, spec: dict[str, Any] | None) -> dict[str, str]:
    """ContainerStatus' verbose map: pids, paths and the OCI spec, as one JSON document."""
    info = {
        "sandboxID": rec.sandbox_id,
        "name": rec.name,
        "pid": rec.pid,
        "monitorPid": rec.monitor_pid,
        "runtimeHandler": rec.runtime_handler,
        "bundle": rec.bundle,
        "rootfs": rec.rootfs,
        "runtimeSpec": spec,
    }
    return {"info": json.dumps(info)}
