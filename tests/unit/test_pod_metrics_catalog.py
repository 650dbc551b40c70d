"""Unit tests for the CRI metric catalog and the family selection (no host access)."""

from __future__ import annotations

import pytest

from oci.stats.metric_catalog import (
    ALWAYS,
    BASE_LABELS,
    BY_NAME,
    CATALOG,
    COUNTER,
    FAMILIES,
    GAUGE,
    catalog_for,
    check_families,
    select_families,
)

# The names critest v1.37 expects (pkg/validate/pod.go expectedMetricDescriptorNames).
CRITEST_NAMES = {
    "container_blkio_device_usage_total", "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total", "container_cpu_cfs_throttled_seconds_total",
    "container_cpu_system_seconds_total", "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total", "container_file_descriptors",
    "container_fs_inodes_free", "container_fs_inodes_total", "container_fs_limit_bytes",
    "container_fs_reads_bytes_total", "container_fs_reads_total", "container_fs_usage_bytes",
    "container_fs_writes_bytes_total", "container_fs_writes_total",
    "container_hugetlb_max_usage_bytes", "container_hugetlb_usage_bytes",
    "container_last_seen", "container_memory_cache", "container_memory_failcnt",
    "container_memory_failures_total", "container_memory_kernel_usage",
    "container_memory_mapped_file", "container_memory_max_usage_bytes",
    "container_memory_rss", "container_memory_swap", "container_memory_usage_bytes",
    "container_memory_working_set_bytes", "container_network_receive_bytes_total",
    "container_network_receive_errors_total", "container_network_receive_packets_dropped_total",
    "container_network_receive_packets_total", "container_network_transmit_bytes_total",
    "container_network_transmit_errors_total",
    "container_network_transmit_packets_dropped_total",
    "container_network_transmit_packets_total", "container_oom_events_total",
    "container_pressure_cpu_stalled_seconds_total",
    "container_pressure_cpu_waiting_seconds_total",
    "container_pressure_io_stalled_seconds_total", "container_pressure_io_waiting_seconds_total",
    "container_pressure_memory_stalled_seconds_total",
    "container_pressure_memory_waiting_seconds_total", "container_processes",
    "container_sockets", "container_spec_cpu_period", "container_spec_cpu_quota",
    "container_spec_cpu_shares", "container_spec_memory_limit_bytes",
    "container_spec_memory_reservation_limit_bytes", "container_spec_memory_swap_limit_bytes",
    "container_start_time_seconds", "container_threads", "container_threads_max",
    "container_ulimits_soft",
}  # fmt: skip


def test_catalog_is_the_56_names_critest_expects() -> None:
    assert len(CATALOG) == 56
    assert {s.name for s in CATALOG} == CRITEST_NAMES
    assert len(BY_NAME) == len(CATALOG)  # no name twice


def test_every_descriptor_has_help_kind_and_label_keys() -> None:
    for spec in CATALOG:
        assert spec.help.strip(), spec.name
        assert spec.kind in (COUNTER, GAUGE), spec.name
        assert spec.label_keys[: len(BASE_LABELS)] == BASE_LABELS
        assert len(set(spec.label_keys)) == len(spec.label_keys), spec.name
        assert spec.family in (*FAMILIES, ALWAYS), spec.name
        # counters end in _total, gauges do not; cAdvisor's two exceptions kept
        assert spec.name.endswith("_total") == (spec.kind == COUNTER) or spec.name in (
            "container_memory_failcnt", "container_fs_inodes_total",
        ), spec.name


def test_every_family_has_metrics_and_only_last_seen_is_always_on() -> None:
    assert {s.family for s in CATALOG} == {*FAMILIES, ALWAYS}
    assert [s.name for s in CATALOG if s.family == ALWAYS] == ["container_last_seen"]


def test_selection() -> None:
    assert select_families(["all"]) == frozenset(FAMILIES)
    assert select_families(["cpu", "network"]) == {"cpu", "network"}
    assert [s.name for s in catalog_for(select_families([]))] == ["container_last_seen"]
    chosen = catalog_for(select_families(["oom"]))
    assert [s.name for s in chosen] == ["container_last_seen", "container_oom_events_total"]
    assert len(catalog_for(select_families(["all"]))) == 56


@pytest.mark.parametrize(
    ("names", "needle"),
    [
        (["cpu", "CPU"], "unknown metric families 'CPU'"),
        (["disk_io"], "unknown metric families 'disk_io'"),
        (["all", "cpu"], "'all' must be alone"),
    ],
)
def test_bad_selection_names_the_problem(names: list[str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        check_families(names)
    with pytest.raises(ValueError, match=needle):
        select_families(names)
