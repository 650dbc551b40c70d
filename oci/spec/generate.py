"""Build the OCI runtime spec (config.json) of a Kubernetes container.

``generate_spec`` assembles the pieces computed by the spec_* modules. It reads the
image's /etc/passwd and /etc/group under the rootfs, stats requested devices, reads
seccomp profiles and /proc/self/mountinfo when propagation is requested, and creates
missing bind-mount sources as directories (see spec_mounts); nothing else touches
the host.
"""

from __future__ import annotations

import os
from typing import Any

from base.errors import Internal
from oci.spec.capabilities import process_capabilities
from oci.spec.devices import device_rules_and_nodes
from oci.spec.inputs import ContainerRequest, DaemonFacts, ImageConfig
from oci.spec.mounts import (
    check_propagation,
    kernel_mounts,
    merge_mounts,
    pod_file_mounts,
    request_mount,
    rootfs_propagation,
    shm_mount,
)
from oci.spec.namespaces import has_namespace, linux_namespaces
from oci.spec.process import (
    check_exec,
    nofile_rlimit,
    process_for_exec,
    resolve_args,
    resolve_cwd,
    resolve_env,
)
from oci.spec.resources import cgroups_path, clamp_oom_score_adj, linux_resources
from oci.spec.security import security_settings
from oci.spec.user import process_user, resolve_user_in_rootfs
from sandbox.facts import SandboxFacts

OCI_VERSION = "1.0.2"

__all__ = ["generate_spec", "process_for_exec"]


def generate_spec(
    request: ContainerRequest,
    image: ImageConfig,
    sandbox: SandboxFacts,
    daemon: DaemonFacts,
    rootfs: str,
    *,
    target_pidns_path: str = "",
) -> dict[str, Any]:
    """The OCI runtime spec for ``request`` in ``sandbox``, with its root at ``rootfs``.

    ``target_pidns_path`` is /proc/<pid>/ns/pid of the target container when the pid
    namespace mode is TARGET. Invalid requests raise InvalidArgument.
    """
    if not os.path.isabs(rootfs):
        raise Internal(f"container rootfs {rootfs!r} is not an absolute path")
    security = request.security
    argv = resolve_args(request.command, request.args, image.entrypoint, image.cmd)
    cwd = resolve_cwd(request.working_dir, image.working_dir)
    user = resolve_user_in_rootfs(security, image.user, rootfs)
    env = resolve_env(
        image.env, request.envs, hostname=sandbox.hostname, tty=request.tty, home=user.home
    )
    check_exec(argv, env, "the container command")
    settings = security_settings(security, daemon)
    namespaces = linux_namespaces(
        security.namespace_options,
        sandbox,
        cgroup_v2=daemon.cgroup_v2,
        target_pidns_path=target_pidns_path,
    )
    device_nodes, device_rules = device_rules_and_nodes(
        request.devices, privileged=security.privileged
    )
    resources = linux_resources(request.resources, daemon, device_rules)
    oom_score_adj = clamp_oom_score_adj(
        request.resources.oom_score_adj,
        daemon.own_oom_score_adj,
        can_lower="CAP_SYS_RESOURCE" in daemon.bounding_set,
    )

    requested = [(mount, request_mount(mount)) for mount in request.mounts]
    check_propagation(requested)
    defaults = [
        *kernel_mounts(privileged=security.privileged, cgroup_v2=daemon.cgroup_v2),
        shm_mount(sandbox),
        *pod_file_mounts(sandbox, readonly=security.readonly_rootfs),
    ]
    mounts = merge_mounts(defaults, [spec for _, spec in requested])

    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": cgroups_path(
            daemon.cgroup_driver,
            sandbox.cgroup_parent,
            request.id,
            daemon.systemd_scope_prefix,
        ),
        "devices": device_nodes,
        "maskedPaths": settings.masked_paths,
        "readonlyPaths": settings.readonly_paths,
        "rootfsPropagation": rootfs_propagation(request.mounts),
    }
    if settings.seccomp is not None:
        linux["seccomp"] = settings.seccomp
    if sandbox.userns is not None:  # runc wants them even to join a namespace by path
        linux["uidMappings"] = [m.to_oci() for m in sandbox.userns.uids]
        linux["gidMappings"] = [m.to_oci() for m in sandbox.userns.gids]

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": request.tty,
            "user": process_user(user),
            "args": argv,
            "env": env,
            "cwd": cwd,
            "capabilities": process_capabilities(settings.capabilities),
            "rlimits": [nofile_rlimit(daemon.nofile_limit, daemon.nofile_hard_limit)],
            "noNewPrivileges": security.no_new_privs,
            "oomScoreAdj": oom_score_adj,
        },
        "root": {"path": rootfs, "readonly": security.readonly_rootfs},
        "mounts": mounts,
        "annotations": dict(request.annotations),
        "linux": linux,
    }
    if sandbox.hostname and has_namespace(namespaces, "uts"):
        spec["hostname"] = sandbox.hostname
    return spec
