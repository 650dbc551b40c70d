"""The CRI metric catalog: cAdvisor-compatible names in families, with help and label keys.

ListMetricDescriptors sends the catalog of the configured families; ListPodSandboxMetrics
sends samples of the same names, their label values in the order of ``label_keys``.
Every metric carries ``BASE_LABELS`` (the kubelet v1.37 passes them through as they are,
adding none of its own), then its own extra keys. ``container_last_seen`` is always on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

COUNTER = "counter"
GAUGE = "gauge"

# container: the container's name ("POD" for pod-level metrics); id: the container's id
# (the pod's for "POD"); image: the image as the container was created with it.
BASE_LABELS = ("container", "id", "image", "namespace", "pod")
POD_CONTAINER = "POD"

ALWAYS = "always"
FAMILIES = (
    "cpu", "disk", "diskIO", "hugetlb", "memory", "network", "oom", "process", "spec",
    "pressure",
)  # fmt: skip
ALL = "all"


@dataclass(frozen=True)
class MetricSpec:
    """One metric's descriptor: name, family, counter or gauge, help, extra label keys."""

    name: str
    family: str
    kind: str
    help: str
    extra_labels: tuple[str, ...] = ()

    @property
    def label_keys(self) -> tuple[str, ...]:
        return BASE_LABELS + self.extra_labels


def _c(name: str, family: str, text: str, *extra: str) -> MetricSpec:
    return MetricSpec(name, family, COUNTER, text, extra)


def _g(name: str, family: str, text: str, *extra: str) -> MetricSpec:
    return MetricSpec(name, family, GAUGE, text, extra)


_PSI_WAIT = "Seconds (whole) in which at least one task of the container was delayed for "
_PSI_STALL = "Seconds (whole) in which all non-idle tasks of the container were delayed for "

CATALOG: tuple[MetricSpec, ...] = (
    _g("container_last_seen", ALWAYS, "Unix time (seconds) this container was last seen."),
    # cpu: whole seconds, as the wire carries integers
    _c("container_cpu_user_seconds_total", "cpu", "CPU time spent in user mode, seconds."),
    _c("container_cpu_system_seconds_total", "cpu", "CPU time spent in kernel mode, seconds."),
    _c("container_cpu_usage_seconds_total", "cpu",
       "CPU time consumed on all cores, seconds (cpu=\"total\").", "cpu"),
    _c("container_cpu_cfs_periods_total", "cpu",
       "CFS enforcement periods in which the container was runnable."),
    _c("container_cpu_cfs_throttled_periods_total", "cpu",
       "CFS periods in which the container hit its CPU quota and was throttled."),
    _c("container_cpu_cfs_throttled_seconds_total", "cpu",
       "Time the container spent throttled by its CPU quota, seconds."),
    # disk: the filesystem holding the container's writable layer
    _g("container_fs_inodes_free", "disk",
       "Free inodes on the filesystem of the writable layer.", "device"),
    _g("container_fs_inodes_total", "disk",
       "Inodes on the filesystem of the writable layer.", "device"),
    _g("container_fs_limit_bytes", "disk",
       "Size in bytes of the filesystem of the writable layer.", "device"),
    _g("container_fs_usage_bytes", "disk",
       "Bytes the container's writable layer uses (from the last background walk).", "device"),
    # diskIO: block I/O the cgroup caused, per device
    _c("container_fs_reads_bytes_total", "diskIO", "Bytes read from the device.", "device"),
    _c("container_fs_reads_total", "diskIO", "Read operations completed on the device.",
       "device"),
    _c("container_fs_writes_bytes_total", "diskIO", "Bytes written to the device.", "device"),
    _c("container_fs_writes_total", "diskIO", "Write operations completed on the device.",
       "device"),
    _c("container_blkio_device_usage_total", "diskIO",
       "Block I/O bytes per device and operation (Read, Write).",
       "device", "major", "minor", "operation"),
    # hugetlb
    _g("container_hugetlb_usage_bytes", "hugetlb", "Huge page memory in use, bytes.",
       "pagesize"),
    _g("container_hugetlb_max_usage_bytes", "hugetlb",
       "Highest huge page memory use recorded, bytes.", "pagesize"),
    # memory
    _g("container_memory_cache", "memory", "Page cache charged to the container, bytes."),
    _g("container_memory_rss", "memory", "Anonymous memory and swap cache (RSS), bytes."),
    _g("container_memory_kernel_usage", "memory", "Kernel memory charged to the container, bytes."),
    _g("container_memory_mapped_file", "memory", "Memory-mapped file pages, bytes."),
    _g("container_memory_swap", "memory", "Swap used by the container, bytes."),
    _c("container_memory_failcnt", "memory", "Times the memory usage reached its limit."),
    _g("container_memory_usage_bytes", "memory",
       "All memory charged to the container (cache included), bytes."),
    _g("container_memory_max_usage_bytes", "memory", "Highest memory usage recorded, bytes."),
    _g("container_memory_working_set_bytes", "memory",
       "Memory usage minus inactive file pages (what eviction ranks by), bytes."),
    _c("container_memory_failures_total", "memory",
       "Page faults (failure_type pgfault or pgmajfault) of the container or its subtree.",
       "failure_type", "scope"),
    # network: pod level (container "POD"), per interface of the pod's network namespace
    _c("container_network_receive_bytes_total", "network", "Bytes received.", "interface"),
    _c("container_network_receive_packets_total", "network", "Packets received.", "interface"),
    _c("container_network_receive_packets_dropped_total", "network",
       "Received packets dropped.", "interface"),
    _c("container_network_receive_errors_total", "network", "Receive errors.", "interface"),
    _c("container_network_transmit_bytes_total", "network", "Bytes sent.", "interface"),
    _c("container_network_transmit_packets_total", "network", "Packets sent.", "interface"),
    _c("container_network_transmit_packets_dropped_total", "network",
       "Packets dropped on sending.", "interface"),
    _c("container_network_transmit_errors_total", "network", "Send errors.", "interface"),
    # oom
    _c("container_oom_events_total", "oom",
       "Processes of the container killed by the OOM killer."),
    # process
    _g("container_processes", "process", "Processes in the container."),
    _g("container_threads", "process", "Threads in the container."),
    _g("container_threads_max", "process",
       "Most tasks the container may have (pids limit); 0 means unlimited."),
    _g("container_file_descriptors", "process", "Open file descriptors of the container."),
    _g("container_sockets", "process", "Open sockets of the container."),
    _g("container_ulimits_soft", "process",
       "Soft resource limits of the container's first process, by limit.", "ulimit"),
    # spec
    _g("container_spec_cpu_period", "spec", "CFS period of the container, microseconds."),
    _g("container_spec_cpu_quota", "spec",
       "CFS quota of the container per period, microseconds (absent without a quota)."),
    _g("container_spec_cpu_shares", "spec", "CPU shares (relative weight) of the container."),
    _g("container_spec_memory_limit_bytes", "spec", "Memory limit, bytes; 0 means unlimited."),
    _g("container_spec_memory_reservation_limit_bytes", "spec",
       "Memory soft limit (reservation), bytes; 0 means unlimited."),
    _g("container_spec_memory_swap_limit_bytes", "spec",
       "Memory plus swap limit, bytes; 0 means unlimited."),
    _g("container_start_time_seconds", "spec", "Unix time (seconds) the container started."),
    # pressure (PSI)
    _c("container_pressure_cpu_waiting_seconds_total", "pressure", _PSI_WAIT + "CPU."),
    _c("container_pressure_cpu_stalled_seconds_total", "pressure", _PSI_STALL + "CPU."),
    _c("container_pressure_memory_waiting_seconds_total", "pressure", _PSI_WAIT + "memory."),
    _c("container_pressure_memory_stalled_seconds_total", "pressure", _PSI_STALL + "memory."),
    _c("container_pressure_io_waiting_seconds_total", "pressure", _PSI_WAIT + "I/O."),
    _c("container_pressure_io_stalled_seconds_total", "pressure", _PSI_STALL + "I/O."),
)

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in CATALOG}


def check_families(names: Sequence[str]) -> None:
    """Raise ValueError naming the problem unless ``names`` is a valid family selection."""
    unknown = [n for n in names if n not in FAMILIES and n != ALL]
    if unknown:
        raise ValueError(
            f"unknown metric families {', '.join(map(repr, unknown))}; "
            f"use any of {', '.join(FAMILIES)}, or [{ALL}] alone"
        )
    if ALL in names and len(names) > 1:
        raise ValueError(f"'{ALL}' must be alone (it already selects every family)")


def select_families(names: Iterable[str]) -> frozenset[str]:
    """The families a valid selection names (``all`` → every one); ValueError if invalid."""
    names = list(names)
    check_families(names)
    return frozenset(FAMILIES) if ALL in names else frozenset(names)


def catalog_for(families: frozenset[str]) -> tuple[MetricSpec, ...]:
    """The descriptors of ``families``, plus the always-on ones, in catalog order."""
    return tuple(s for s in CATALOG if s.family == ALWAYS or s.family in families)
