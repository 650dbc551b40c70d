"""What a container inherits from its pod sandbox (read by spec generation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sandbox.idmappings import UserNamespaceMappings


@dataclass(frozen=True)
class SandboxFacts:
    """What a container inherits from its pod sandbox.

    Namespace paths are bind-mounted namespace files or /proc/<pid>/ns/<kind> of the
    infra process; an empty path with the host flag unset means "a new namespace".
    ``userns_path`` and ``userns`` are the pod's pinned user namespace and its
    mappings, empty and None for a pod in the host's user namespace.
    """

    hostname: str = ""
    netns_path: str = ""
    ipcns_path: str = ""
    utsns_path: str = ""
    pidns_path: str = ""  # the infra process's pid namespace, used for pid mode POD
    userns_path: str = ""
    userns: UserNamespaceMappings | None = None
    host_network: bool = False
    host_ipc: bool = False
    host_pid: bool = False
    resolv_conf_path: str = ""
    hosts_path: str = ""
    hostname_path: str = ""
    shm_path: str = ""
    cgroup_parent: str = ""
    sysctls: Mapping[str, str] = field(default_factory=dict)  # applied by the sandbox
