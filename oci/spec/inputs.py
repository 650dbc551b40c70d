"""The inputs of OCI spec generation, as peapod's domain sees them.

These mirror the CRI ``ContainerConfig`` (with its ``LinuxContainerConfig`` and
``LinuxContainerSecurityContext``), the image's runtime config, the facts of the pod
sandbox the container joins, and the facts of the daemon itself. The gRPC layer
translates protobuf messages into these; nothing here knows about protobuf.
"""

from __future__ import annotations

import enum
import os
import platform
import resource
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oci.spec.capabilities import DEFAULT_CAPABILITIES, read_bounding_set
from sandbox.cgroup_layout import V2, detect_layout
from sandbox.idmappings import UserNamespaceMappings

DEFAULT_NOFILE = 1048576


class NamespaceMode(enum.Enum):
    """Whose namespace a container uses (CRI ``NamespaceMode``)."""

    POD = "POD"
    CONTAINER = "CONTAINER"
    NODE = "NODE"
    TARGET = "TARGET"


class MountPropagation(enum.Enum):
    """Mount propagation of a bind mount (CRI ``MountPropagation``)."""

    PRIVATE = "rprivate"
    HOST_TO_CONTAINER = "rslave"
    BIDIRECTIONAL = "rshared"


class SeccompProfileType(enum.Enum):
    """Which seccomp profile applies (CRI ``SecurityProfile.ProfileType``)."""

    RUNTIME_DEFAULT = "RuntimeDefault"
    UNCONFINED = "Unconfined"
    LOCALHOST = "Localhost"


class SupplementalGroupsPolicy(enum.Enum):
    """Merge: image groups of the user plus requested ones; Strict: requested ones only."""

    MERGE = "Merge"
    STRICT = "Strict"


class CgroupDriver(enum.Enum):
    """How cgroups are managed: directly (cgroupfs) or through systemd units."""

    CGROUPFS = "cgroupfs"
    SYSTEMD = "systemd"


@dataclass(frozen=True)
class Mount:
    """A host path bind-mounted into the container, or an image volume.

    An image volume names ``image`` (an ID or reference of a present image) and no
    host path; the container build mounts the image read-only and sets ``host_path``
    to the directory it binds (``image_sub_path`` inside the image).
    """

    container_path: str
    host_path: str
    readonly: bool = False
    propagation: MountPropagation = MountPropagation.PRIVATE
    selinux_relabel: bool = False  # accepted and ignored: peapod has no SELinux support
    recursive_read_only: bool = False
    options: tuple[str, ...] = ()  # extra bind options such as "noexec", "nosuid", "nodev"
    image: str = ""
    user_specified_image: str = ""
    image_sub_path: str = ""
    idmap: UserNamespaceMappings | None = None  # an ID-mapped mount (the pod's mappings)


@dataclass(frozen=True)
class Device:
    """A host device (or a directory of devices) exposed in the container."""

    container_path: str
    host_path: str
    permissions: str = "rwm"


@dataclass(frozen=True)
class HugepageLimit:
    """A HugeTLB limit for one page size such as "2MB" or "1GB"."""

    page_size: str
    limit: int


@dataclass(frozen=True)
class Resources:
    """CRI ``LinuxContainerResources``; zero or empty means "not specified"."""

    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    hugepage_limits: tuple[HugepageLimit, ...] = ()
    unified: Mapping[str, str] = field(default_factory=dict)
    memory_swap_limit_in_bytes: int = 0


@dataclass(frozen=True)
class Capabilities:
    """Capabilities to add to and drop from the defaults; "ALL" is allowed in both."""

    add: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()


@dataclass(frozen=True)
class NamespaceOptions:
    """Namespace modes of a container; ``target_id`` names the container for TARGET.

    ``user`` is the user namespace mode the request gives (None: not given, so the
    pod's), with ``userns`` its mappings for POD.
    """

    network: NamespaceMode = NamespaceMode.POD
    pid: NamespaceMode = NamespaceMode.POD
    ipc: NamespaceMode = NamespaceMode.POD
    target_id: str = ""
    user: NamespaceMode | None = None
    userns: UserNamespaceMappings | None = None


@dataclass(frozen=True)
class SeccompProfile:
    """A seccomp choice; ``localhost_ref`` is an absolute path for LOCALHOST.

    ``loaded`` is the LOCALHOST profile once read (``seccomp.load_localhost``), so the
    file is read before the pod's lock is taken, not while it is held.
    """

    type: SeccompProfileType
    localhost_ref: str = ""
    loaded: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SecurityContext:
    """CRI ``LinuxContainerSecurityContext`` (SELinux and AppArmor are not supported).

    ``masked_paths``/``readonly_paths``: None means "use the runtime defaults", an
    empty tuple means "none". ``seccomp``: None means unconfined, as in the CRI.
    """

    capabilities: Capabilities = Capabilities()
    privileged: bool = False
    namespace_options: NamespaceOptions = NamespaceOptions()
    run_as_user: int | None = None
    run_as_username: str = ""
    run_as_group: int | None = None
    readonly_rootfs: bool = False
    supplemental_groups: tuple[int, ...] = ()
    supplemental_groups_policy: SupplementalGroupsPolicy = SupplementalGroupsPolicy.MERGE
    no_new_privs: bool = False
    masked_paths: tuple[str, ...] | None = None
    readonly_paths: tuple[str, ...] | None = None
    seccomp: SeccompProfile | None = None


@dataclass(frozen=True)
class ContainerRequest:
    """What the kubelet asked for in CreateContainer, already validated as a message."""

    id: str
    name: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    envs: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    devices: tuple[Device, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    resources: Resources = Resources()
    security: SecurityContext = SecurityContext()


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image's config (OCI image-spec ``config``)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()  # "KEY=value" strings
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""


@dataclass(frozen=True)
class DaemonFacts:
    """Configuration and host facts of the peapod daemon that shape every spec."""

    bounding_set: frozenset[str]
    cgroup_driver: CgroupDriver = CgroupDriver.CGROUPFS
    cgroup_v2: bool = False
    swap_accounting: bool = False
    hugetlb: bool = True  # the runtime can set hugepage limits (it has a hugetlb hierarchy)
    default_capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    seccomp_profile_path: str = ""  # "" means peapod's packaged default profile
    own_oom_score_adj: int = 0
    pids_limit: int = 0  # 0 means no pids limit
    nofile_limit: int = DEFAULT_NOFILE
    nofile_hard_limit: int | None = None  # the daemon's own hard RLIMIT_NOFILE; None: unlimited
    machine: str = ""  # platform.machine(), selects seccomp architectures
    systemd_scope_prefix: str = "peapod"

    @classmethod
    def detect(cls, **config: object) -> DaemonFacts:
        """Read the facts from the running host; ``config`` supplies the rest."""
        v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
        swap_file = (
            os.path.join("/sys/fs/cgroup", _own_v2_cgroup().lstrip("/"), "memory.swap.max")
            if v2
            else "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"
        )
        with open("/proc/self/oom_score_adj", encoding="ascii") as f:
            own_adj = int(f.read().strip())
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        facts: dict[str, object] = {
            "bounding_set": read_bounding_set(),
            "cgroup_v2": v2,
            "swap_accounting": os.path.exists(swap_file),
            "hugetlb": _hugetlb_usable(),
            "own_oom_score_adj": own_adj,
            "nofile_hard_limit": None if hard == resource.RLIM_INFINITY else hard,
            "machine": platform.machine(),
        }
        facts.update(config)
        return cls(**facts)  # type: ignore[arg-type]


def _hugetlb_usable() -> bool:
    """Whether runc can set hugepage limits here: a v1 hugetlb hierarchy, or on pure v2 the
    hugetlb controller. On a hybrid host hugetlb may sit on the cgroup2 mount, which runc's
    v1 manager does not use."""
    layout = detect_layout()
    if layout.version != V2:
        return "hugetlb" in layout.v1
    assert layout.unified is not None
    try:
        return "hugetlb" in (layout.unified / "cgroup.controllers").read_text().split()
    except OSError:
        return False


def _own_v2_cgroup() -> str:
    """The daemon's cgroup v2 path ("0::<path>" in /proc/self/cgroup), "/" if unknown."""
    with open("/proc/self/cgroup", encoding="utf-8") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip() or "/"
    return "/"
