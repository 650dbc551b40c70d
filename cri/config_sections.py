"""The sections of peapod's configuration (``cri.config``): one dataclass each.

Every field carries its documentation in ``metadata["doc"]`` (``option``), which
``peapod config --defaults`` prints; ``cri.config`` holds the root ``Config``, the
checks of values and the loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def option(default: Any, doc: str) -> Any:
    """A documented field with ``default`` (lists and dicts copied for each instance)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


def section(cls: type, doc: str) -> Any:
    """A documented field holding a section, made afresh for each instance."""
    return field(default_factory=cls, metadata={"doc": doc})


@dataclass
class MetricsConfig:
    address: str = option(
        "127.0.0.1:9539",
        "HOST:PORT serving Prometheus metrics at /metrics over HTTP; empty disables it. "
        "Keep it on loopback unless a scraper needs it.",
    )


@dataclass
class RuntimeHandlerConfig:
    runtime_path: str = option(
        "",
        "The OCI runtime binary (runc-compatible command line): an absolute path, or a "
        "name looked up in PATH and the sbin directories; empty means the handler's name.",
    )
    runtime_root: str = option(
        "",
        "Directory where the runtime keeps its container state (its --root); empty means "
        "<runroot>/runtimes/<handler name>.",
    )
    monitor_path: str = option(
        "/usr/bin/conmon",
        "The conmon binary that monitors each container: holds its stdio, writes its CRI "
        "log and exit status, and outlives peapod.",
    )
    monitor_env: list[str] = option(
        ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Environment (KEY=value) conmon and the runtime run with.",
    )
    create_timeout: float = option(
        240.0,
        "Seconds CreateContainer may spend creating a container of this handler (image, "
        "rootfs, config.json, conmon and the runtime). Creation goes on past the caller's "
        "deadline; a container created late is kept for the kubelet's retry (kept_for_retry).",
    )


def _default_runtimes() -> dict[str, RuntimeHandlerConfig]:
    return {
        "runc": RuntimeHandlerConfig(runtime_path="/usr/sbin/runc"),
        "crun": RuntimeHandlerConfig(runtime_path="/usr/bin/crun"),
    }


@dataclass
class RuntimeConfig:
    default_runtime: str = option(
        "runc",
        "The runtime handler for pods that name none (an empty RuntimeClass handler); must be "
        "a key of runtimes.",
    )
    runtimes: dict[str, RuntimeHandlerConfig] = field(
        default_factory=_default_runtimes,
        metadata={
            "doc": "Runtime handlers by name (the kubelet's RuntimeClass handler). Setting this "
            "key replaces the whole default table."
        },
    )
    seccomp_profile: str = option(
        "",
        "Seccomp profile (JSON) for RuntimeDefault; empty means peapod's built-in profile.",
    )
    pids_limit: int = option(0, "Maximum processes per container (pids cgroup); 0 means no limit.")
    log_size_max: int = option(
        -1,
        "Bytes a container log may reach before conmon truncates it; -1 means no limit "
        "(the kubelet rotates logs). At least 8192 when set.",
    )
    exec_output_max: int = option(
        16 * 1024 * 1024, "Bytes of stdout and of stderr ExecSync returns at most."
    )


@dataclass
class ImageConfig:
    registries_conf: str = option(
        "/etc/containers/registries.conf",
        "containers-registries.conf(5) v2 file with mirrors, insecure, blocked and "
        "unqualified-search registries (shared with CRI-O, podman, skopeo). May be absent.",
    )
    registries_conf_dir: str = option(
        "/etc/containers/registries.conf.d",
        "Drop-in directory for registries.conf; *.conf files applied in lexical order.",
    )
    certs_dir: str = option(
        "/etc/containers/certs.d",
        "Per-registry CA certificates: <certs_dir>/<host[:port]>/*.crt are trusted for that host.",
    )
    default_search_registries: list[str] = option(
        ["docker.io"],
        "Registries tried for short names when registries.conf sets no "
        "unqualified-search-registries.",
    )
    max_parallel_downloads: int = option(3, "Layers downloaded at once per pull.")
    registry_timeout: float = option(
        60.0,
        "Seconds a single registry read may stall before the pull fails (the caller's "
        "deadline applies too).",
    )


@dataclass
class NetworkConfig:
    network_dir: str = option(
        "/etc/cni/net.d",
        "CNI network configurations (*.conflist, *.conf, *.json), read in lexical order; the "
        "first valid one is used unless default_network names another. Re-read for every pod.",
    )
    plugin_dirs: list[str] = option(
        ["/usr/lib/cni", "/opt/cni/bin"], "Directories searched, in order, for CNI plugin binaries."
    )
    default_network: str = option(
        "", "Name of the CNI network pods attach to; empty picks the first valid file."
    )
    wait_for_config: float = option(
        10.0,
        "Seconds RunPodSandbox waits for a usable network config to appear before failing "
        "(bounded by the caller's deadline). Host-network pods never wait.",
    )
    plugin_timeout: float = option(
        60.0, "Seconds one CNI plugin run (ADD, DEL, STATUS) may take before it is killed."
    )


@dataclass
class SandboxConfig:
    shm_size: int = option(
        64 * 1024 * 1024,
        "Size in bytes of the tmpfs each pod gets as /dev/shm (pods using the host IPC "
        "namespace share the host's /dev/shm instead).",
    )
    default_cgroup_parent: str = option(
        "peapod",
        "Where a pod that names no cgroup_parent gets its own cgroup: /<this>/pod<id> with "
        "cgroupfs, <this>-pod<id>.slice with systemd.",
    )
    create_timeout: float = option(
        240.0,
        "Seconds RunPodSandbox may spend building a pod. Building goes on past the caller's "
        "deadline; a pod finished late is kept for the kubelet's retry (kept_for_retry).",
    )


@dataclass
class StreamingConfig:
    address: str = option(
        "127.0.0.1",
        "Address the streaming server (Exec, Attach, PortForward URLs; CRI-O's stream_address) "
        "listens on. Keep it on loopback unless the kubelet reaches it from elsewhere.",
    )
    port: int = option(0, "TCP port of the streaming server; 0 picks a free port at start.")
    tls_cert: str = option("", "PEM certificate for HTTPS streaming; empty serves plain HTTP.")
    tls_key: str = option("", "PEM private key of tls_cert.")
    tls_client_ca: str = option(
        "", "PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."
    )
    idle_timeout: float = option(
        14400.0, "Seconds a stream may pass with no byte either way before it is closed."
    )
    max_sessions: int = option(
        200, "Streaming connections served at once; more are refused with 503."
    )
    max_pending: int = option(
        1000, "Streaming URLs handed out but not yet used; more fail with RESOURCE_EXHAUSTED."
    )
    token_ttl: float = option(60.0, "Seconds a streaming URL stays usable before its first use.")


@dataclass
class StatsConfig:
    collection_period: float = option(
        10.0,
        "Seconds between background stats rounds: the cgroup figures (CPU, memory, swap, "
        "PSI, tasks) and pod network counters of every listed container and pod, then the "
        "writable-layer walks (used bytes and inodes). ListContainerStats and "
        "ListPodSandboxStats serve the last round's figures (stamped with their read time; "
        "one not yet seen is read during the call), the by-id calls read afresh; no call "
        "waits for a walk, and a new container is walked within about a second.",
    )
    walk_budget: int = option(
        100000,
        "Most directory entries one round of writable-layer walks visits, over all "
        "containers. A round that runs out resumes where it stopped at the next round, so "
        "one huge layer never stalls the others; a layer's figure is that of its last "
        "complete walk (until its first walk completes, what was counted so far).",
    )
    included_pod_metrics: list[str] = option(
        ["all"],
        "Metric families ListPodSandboxMetrics collects: any of cpu, disk, diskIO, hugetlb, "
        "memory, network, oom, process, spec, pressure, or [all]; container_last_seen is "
        "always sent. [] sends only that (CRI-O's default).",
    )


@dataclass
class EventsConfig:
    enable: bool = option(
        True,
        "Serve GetContainerEvents (the kubelet's evented PLEG); off, the rpc ends at once.",
    )
    subscriber_queue: int = option(
        1000,
        "Events queued per GetContainerEvents subscriber; one that falls this far behind is "
        "disconnected (logged and counted in peapod_container_events_dropped_subscribers).",
    )


@dataclass
class NRIConfig:
    enable: bool = option(
        True,
        "Host NRI plugins (the node resource interface of containerd/nri v0.12): they see "
        "pod and container lifecycle events and may adjust containers as they are created.",
    )
    socket_path: str = option(
        "/var/run/nri/nri.sock",
        "Unix socket external plugins connect to. A live socket another runtime serves is "
        "left alone (logged; only plugin_dirs' plugins run then).",
    )
    socket_mode: str = option("0600", "Permission bits of socket_path, in octal.")
    allow_external_connections: bool = option(
        True, "Accept plugins connecting to socket_path; false runs only plugin_dirs' plugins."
    )
    plugin_dirs: list[str] = option(
        ["/opt/nri/plugins"],
        "Directories of plugins peapod starts with itself: executables named "
        "<index>-<name>, the index two digits giving the call order. A name found in two "
        "directories runs from the first.",
    )
    plugin_config_dir: str = option(
        "/etc/nri/conf.d",
        "Configuration handed to a started plugin: <index>-<name>.conf, else <name>.conf.",
    )
    plugin_registration_timeout: float = option(
        5.0,
        "Seconds a plugin has to register once connected or started, and for each of its "
        "Configure and Synchronize calls.",
    )
    plugin_request_timeout: float = option(
        2.0,
        "Seconds a plugin has to answer one lifecycle event; one that does not is "
        "disconnected (and then on_timeout decides).",
    )
    on_timeout: str = option(
        "proceed",
        "What the CRI call does when a plugin it waits for times out: proceed without that "
        "plugin, or fail.",
    )
