"""The container's namespaces (``linux.namespaces``).

Network, IPC and UTS are always the pod's (they are pod-level in Kubernetes), so the
sandbox's facts decide them; a host-network pod also shares the host's UTS namespace.
The PID namespace follows the container's own mode. Every container gets its own
mount namespace, and its own cgroup namespace on cgroup v2. A pod in its own user
namespace has its containers join it (the pod's other namespaces belong to it).
"""

from __future__ import annotations

from typing import Any

from base.errors import FailedPrecondition, InvalidArgument
from oci.spec.inputs import NamespaceMode, NamespaceOptions
from sandbox.facts import SandboxFacts

Spec = dict[str, Any]


def _ns(kind: str, path: str = "") -> Spec:
    return {"type": kind, "path": path} if path else {"type": kind}


def _pid_namespace(
    options: NamespaceOptions, sandbox: SandboxFacts, target_pidns_path: str
) -> Spec | None:
    mode = options.pid
    if mode is NamespaceMode.NODE:
        return None
    if mode is NamespaceMode.CONTAINER:
        return _ns("pid")
    if mode is NamespaceMode.TARGET:
        if not target_pidns_path:
            raise InvalidArgument(
                f"pid namespace mode TARGET needs a running target container "
                f"(target_id {options.target_id!r} could not be resolved)"
            )
        return _ns("pid", target_pidns_path)
    if sandbox.host_pid:
        return None
    if not sandbox.pidns_path:
        raise FailedPrecondition(
            "the pod sandbox has no pid namespace to share (is its infra process running?)"
        )
    return _ns("pid", sandbox.pidns_path)


def _user_namespace(options: NamespaceOptions, sandbox: SandboxFacts) -> Spec | None:
    """The pod's user namespace, which all its containers share; None for the host's."""
    if sandbox.userns is None:
        if options.user is NamespaceMode.POD:
            raise InvalidArgument(
                "the container asks for the pod's user namespace (userns_options mode POD), "
                "but its pod runs in the host's"
            )
        return None
    if options.user is NamespaceMode.NODE:
        raise InvalidArgument(
            "the pod runs in its own user namespace, so its containers do too; "
            "userns_options mode NODE cannot be granted"
        )
    if options.user is NamespaceMode.POD and options.userns != sandbox.userns:
        raise InvalidArgument(
            "the container's userns_options mappings differ from its pod's; a container "
            "joins its pod's user namespace"
        )
    if not sandbox.userns_path:
        raise FailedPrecondition("the pod's user namespace is not pinned")
    return _ns("user", sandbox.userns_path)


def linux_namespaces(
    options: NamespaceOptions,
    sandbox: SandboxFacts,
    *,
    cgroup_v2: bool,
    target_pidns_path: str = "",
) -> list[Spec]:
    """The namespace list; an entry with a path joins it, one without creates a new one."""
    spaces: list[Spec] = [_ns("mount")]
    user = _user_namespace(options, sandbox)
    if user is not None:
        spaces.append(user)
    if not sandbox.host_network:
        spaces.append(_ns("network", sandbox.netns_path))
        spaces.append(_ns("uts", sandbox.utsns_path))
    if not sandbox.host_ipc:
        spaces.append(_ns("ipc", sandbox.ipcns_path))
    pid = _pid_namespace(options, sandbox, target_pidns_path)
    if pid is not None:
        spaces.append(pid)
    if cgroup_v2:
        spaces.append(_ns("cgroup"))
    return spaces


def has_namespace(spaces: list[Spec], kind: str) -> bool:
    """Whether the list gives the container a namespace of ``kind`` (new or joined)."""
    return any(ns["type"] == kind for ns in spaces)
