"""CRI container messages to domain requests, and container records back to messages."""

from __future__ import annotations

import json
from typing import Any

from api import api_pb2 as pb
from base.errors import InvalidArgument
from base.text import check_no_nul, check_path, check_text, shorten
from cri.call import object_id
from cri.convert.resources import resources
from cri.convert.userns import mount_mappings, userns_mode
from cri.convert.validate import choice, object_name, string_map
from oci.container.create import CreateRequest, check_log_path
from oci.container.image_volumes import check_sub_path
from oci.container.manager import ContainerFilter
from oci.container.record import CREATED, EXITED, RUNNING, ContainerRecord
from oci.spec.inputs import (
    Capabilities,
    ContainerRequest,
    Device,
    Mount,
    MountPropagation,
    NamespaceMode,
    NamespaceOptions,
    SeccompProfile,
    SeccompProfileType,
    SecurityContext,
    SupplementalGroupsPolicy,
)
from oci.spec.mounts import destination
from oci.spec.process import check_exec
from oci.spec.seccomp import load_localhost, profile_from_legacy_path

_PROPAGATION = {
    pb.PROPAGATION_PRIVATE: MountPropagation.PRIVATE,
    pb.PROPAGATION_HOST_TO_CONTAINER: MountPropagation.HOST_TO_CONTAINER,
    pb.PROPAGATION_BIDIRECTIONAL: MountPropagation.BIDIRECTIONAL,
}
_NS_MODE = {
    pb.POD: NamespaceMode.POD,
    pb.CONTAINER: NamespaceMode.CONTAINER,
    pb.NODE: NamespaceMode.NODE,
}
# TARGET (another container's namespace) exists for the PID namespace only.
_PID_MODE = {**_NS_MODE, pb.TARGET: NamespaceMode.TARGET}
_GROUPS_POLICY = {
    pb.Merge: SupplementalGroupsPolicy.MERGE,
    pb.Strict: SupplementalGroupsPolicy.STRICT,
}
# Bounds on free-form strings: an image reference or ID, a user name, a mount option.
MAX_IMAGE_LEN = 4096
MAX_USERNAME_LEN = 256
MAX_OPTION_LEN = 64
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


def _image_volume(m: pb.Mount, where: str) -> None:
    """Refuse what an image volume cannot be: writable, shared, or also a host path."""
    check_text(m.image.image, f"image volume {where} image", MAX_IMAGE_LEN)
    check_text(m.image.user_specified_image, f"image volume {where} user_specified_image",
               MAX_IMAGE_LEN)  # fmt: skip
    if m.host_path:
        raise InvalidArgument(
            f"mount {where} names both an image and host_path {shorten(m.host_path)}; "
            "set one of them"
        )
    if not m.readonly:
        raise InvalidArgument(f"image volume {where} must be readonly: an image is read-only")
    if m.propagation != pb.PROPAGATION_PRIVATE:
        raise InvalidArgument(
            f"image volume {where}: mount propagation must be private (an image volume "
            "has no mounts to share)"
        )
    check_sub_path(m.image_sub_path, where)


def _mount(m: pb.Mount) -> Mount:
    where = shorten(m.container_path)
    image = m.image.image if m.HasField("image") else ""
    if image:
        _image_volume(m, where)
    elif m.image_sub_path:
        raise InvalidArgument(f"mount {where} has image_sub_path but names no image")
    idmap = mount_mappings(m, f"mount {where}")
    check_path(m.container_path, "mount container_path")
    destination(m.container_path)  # where runc refuses a mount, refused here first
    if not image:
        check_path(m.host_path, f"mount {where} host_path")
    for option in m.mount_options:
        check_text(option, f"mount {where} option", MAX_OPTION_LEN)
    return Mount(
        container_path=m.container_path,
        host_path=m.host_path,
        readonly=m.readonly,
        propagation=choice(
            pb.MountPropagation, _PROPAGATION, m.propagation, f"mount {where} propagation"
        ),
        selinux_relabel=m.selinux_relabel,
        recursive_read_only=m.recursive_read_only,
        options=tuple(m.mount_options),
        image=image,
        user_specified_image=m.image.user_specified_image if image else "",
        image_sub_path=m.image_sub_path,
        idmap=idmap,
    )


def _seccomp(sc: pb.LinuxContainerSecurityContext) -> SeccompProfile | None:
    """The profile, a Localhost one read now: before, not under, the pod's lock."""
    if sc.HasField("seccomp"):
        kind = choice(pb.SecurityProfile.ProfileType, _SECCOMP, sc.seccomp.profile_type,
                      "seccomp profile_type")  # fmt: skip
        profile = SeccompProfile(kind, sc.seccomp.localhost_ref)
    else:
        check_text(sc.seccomp_profile_path, "seccomp_profile_path", 4096)
        profile = profile_from_legacy_path(sc.seccomp_profile_path)
    return load_localhost(profile)


def _paths(paths: Any, field: str) -> tuple[str, ...]:
    return tuple(check_path(p, field) for p in paths)


def _security(sc: pb.LinuxContainerSecurityContext) -> SecurityContext:
    ns = sc.namespace_options
    user, userns = userns_mode(ns, "namespace_options")
    if sc.capabilities.add_ambient_capabilities:
        raise InvalidArgument("ambient capabilities are not supported by peapod")
    check_text(sc.run_as_username, "run_as_username", MAX_USERNAME_LEN)
    if ns.target_id:
        object_id(ns.target_id, "namespace_options.target_id", "a container id")
    return SecurityContext(
        capabilities=Capabilities(
            add=tuple(sc.capabilities.add_capabilities),
            drop=tuple(sc.capabilities.drop_capabilities),
        ),
        privileged=sc.privileged,
        namespace_options=NamespaceOptions(
            network=choice(pb.NamespaceMode, _NS_MODE, ns.network, "namespace_options.network"),
            pid=choice(pb.NamespaceMode, _PID_MODE, ns.pid, "namespace_options.pid"),
            ipc=choice(pb.NamespaceMode, _NS_MODE, ns.ipc, "namespace_options.ipc"),
            target_id=ns.target_id,
            user=NamespaceMode(user) if user else None,
            userns=userns,
        ),
        run_as_user=sc.run_as_user.value if sc.HasField("run_as_user") else None,
        run_as_username=sc.run_as_username,
        run_as_group=sc.run_as_group.value if sc.HasField("run_as_group") else None,
        readonly_rootfs=sc.readonly_rootfs,
        supplemental_groups=tuple(sc.supplemental_groups),
        supplemental_groups_policy=choice(
            pb.SupplementalGroupsPolicy, _GROUPS_POLICY, sc.supplemental_groups_policy,
            "supplemental_groups_policy",
        ),
        no_new_privs=sc.no_new_privs,
        # The kubelet always sends the lists it wants; empty means the defaults.
        masked_paths=_paths(sc.masked_paths, "masked_paths") or None,
        readonly_paths=_paths(sc.readonly_paths, "readonly_paths") or None,
        seccomp=_seccomp(sc),
    )


def _env(kv: pb.KeyValue) -> tuple[str, str]:
    name = shorten(kv.key)
    if not kv.key or "=" in kv.key:
        raise InvalidArgument(f"environment variable name {name} is empty or holds '='")
    check_no_nul(kv.key, "environment variable name")
    try:
        value = kv.value.decode() if isinstance(kv.value, bytes) else str(kv.value)
    except UnicodeDecodeError:
        raise InvalidArgument(f"environment variable {name} is not valid UTF-8") from None
    check_no_nul(value, f"environment variable {name}")
    return kv.key, value


def _device(d: pb.Device) -> Device:
    check_path(d.container_path, "device container_path")
    check_path(d.host_path, "device host_path")
    check_text(d.permissions, "device permissions", 3)
    return Device(d.container_path, d.host_path, d.permissions or "rwm")


def create_request(req: pb.CreateContainerRequest) -> CreateRequest:
    """The domain request of CreateContainer; InvalidArgument for unusable fields."""
    cfg = req.config
    pod_id = object_id(req.pod_sandbox_id, "CreateContainerRequest.pod_sandbox_id",
                       "the pod's id")  # fmt: skip
    name = object_name(cfg.metadata.name, "CreateContainerRequest.config.metadata.name")
    if not cfg.image.image:
        raise InvalidArgument("CreateContainerRequest.config.image.image is empty")
    check_text(cfg.image.image, "CreateContainerRequest.config.image.image", MAX_IMAGE_LEN)
    if cfg.CDI_devices:
        raise InvalidArgument("CDI devices are not supported by peapod")
    if cfg.working_dir:
        check_path(cfg.working_dir, "working_dir")
    envs = tuple(_env(kv) for kv in cfg.envs)
    # What the kernel cannot exec is refused now, not by a runtime under the pod's lock.
    check_exec([*cfg.command, *cfg.args], [f"{k}={v}" for k, v in envs],
               "the container command")  # fmt: skip
    linux = cfg.linux
    container = ContainerRequest(
        id="",
        name=name,
        command=tuple(cfg.command),
        args=tuple(cfg.args),
        working_dir=cfg.working_dir,
        envs=envs,
        mounts=tuple(_mount(m) for m in cfg.mounts),
        devices=tuple(_device(d) for d in cfg.devices),
        labels=string_map(cfg.labels, "ContainerConfig.labels"),
        annotations=string_map(cfg.annotations, "ContainerConfig.annotations"),
        tty=cfg.tty,
        stdin=cfg.stdin,
        stdin_once=cfg.stdin_once,
        resources=resources(linux.resources),
        security=_security(linux.security_context),
    )
    return CreateRequest(
        pod_id=pod_id,
        container=container,
        attempt=cfg.metadata.attempt,
        image=cfg.image.image,
        image_annotations=string_map(cfg.image.annotations, "ImageSpec.annotations"),
        user_specified_image=check_text(cfg.image.user_specified_image,
                                        "ImageSpec.user_specified_image", MAX_IMAGE_LEN),
        log_path=check_log_path(cfg.log_path),
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
    out = pb.Mount(
        container_path=m["container_path"],
        host_path=m["host_path"],
        readonly=m["readonly"],
        selinux_relabel=m["selinux_relabel"],
        propagation=pb.MountPropagation.Value("PROPAGATION_" + m["propagation"]),
        recursive_read_only=m["recursive_read_only"],
    )
    image = m.get("image")
    if image:
        # image_ref is the image's ID: what PullImage answered for it (critest compares).
        out.image.CopyFrom(pb.ImageSpec(
            image=image["image"],
            user_specified_image=image["user_specified_image"],
            image_ref=image["image_id"],
        ))  # fmt: skip
        out.image_sub_path = image["image_sub_path"]
    return out


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
