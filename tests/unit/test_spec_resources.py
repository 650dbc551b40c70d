"""Cgroup paths, resource limits, OOM score clamping, namespaces and devices."""

from __future__ import annotations

import os
import stat

import pytest

from base.errors import FailedPrecondition, InvalidArgument
from oci.spec.devices import device_node, device_rules_and_nodes
from oci.spec.inputs import (
    CgroupDriver,
    DaemonFacts,
    Device,
    HugepageLimit,
    NamespaceMode,
    NamespaceOptions,
    Resources,
)
from oci.spec.namespaces import linux_namespaces
from oci.spec.resources import cgroups_path, clamp_oom_score_adj, linux_resources
from sandbox.facts import SandboxFacts

V1 = DaemonFacts(bounding_set=frozenset(), swap_accounting=True)
V2 = DaemonFacts(bounding_set=frozenset(), cgroup_v2=True, swap_accounting=True, pids_limit=1024)
DENY_ALL = {"allow": False, "access": "rwm"}


class TestCgroupsPath:
    def test_cgroupfs(self) -> None:
        assert cgroups_path(CgroupDriver.CGROUPFS, "/kubepods/besteffort/pod1", "c1", "peapod") \
            == "/kubepods/besteffort/pod1/c1"
        assert cgroups_path(CgroupDriver.CGROUPFS, "kubepods/", "c1", "peapod") == "/kubepods/c1"
        assert cgroups_path(CgroupDriver.CGROUPFS, "", "c1", "peapod") == "/peapod/c1"

    def test_systemd(self) -> None:
        assert cgroups_path(CgroupDriver.SYSTEMD, "kubepods-besteffort-pod1.slice", "c1",
                            "peapod") == "kubepods-besteffort-pod1.slice:peapod:c1"
        assert cgroups_path(CgroupDriver.SYSTEMD, "", "c1", "peapod") == "system.slice:peapod:c1"

    def test_driver_mismatch_and_bad_names(self) -> None:
        with pytest.raises(InvalidArgument, match="not a systemd slice"):
            cgroups_path(CgroupDriver.SYSTEMD, "/kubepods/pod1", "c1", "peapod")
        with pytest.raises(InvalidArgument, match="uses cgroupfs"):
            cgroups_path(CgroupDriver.CGROUPFS, "kubepods.slice", "c1", "peapod")
        with pytest.raises(InvalidArgument, match=r"\.\."):
            cgroups_path(CgroupDriver.CGROUPFS, "/kubepods/../etc", "c1", "peapod")
        with pytest.raises(InvalidArgument, match="cannot name a cgroup"):
            cgroups_path(CgroupDriver.CGROUPFS, "/k", "../c1", "peapod")


def test_oom_score_adj_clamped_to_daemon() -> None:
    assert clamp_oom_score_adj(-997, own=0, can_lower=False) == 0
    assert clamp_oom_score_adj(-997, own=-500, can_lower=False) == -500
    assert clamp_oom_score_adj(1000, own=0, can_lower=False) == 1000
    assert clamp_oom_score_adj(-997, own=0, can_lower=True) == -997
    assert clamp_oom_score_adj(5000, own=0, can_lower=True) == 1000
    assert clamp_oom_score_adj(-5000, own=-1000, can_lower=True) == -1000


def test_full_resources_v1() -> None:
    res = Resources(cpu_period=100000, cpu_quota=50000, cpu_shares=512,
                    memory_limit_in_bytes=64 << 20, cpuset_cpus="0-1", cpuset_mems="0",
                    hugepage_limits=(HugepageLimit("2MB", 4 << 20),))
    assert linux_resources(res, V1, [DENY_ALL]) == {
        "devices": [DENY_ALL],
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
        "memory": {"limit": 64 << 20, "swap": 64 << 20},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
    }


def test_empty_resources_only_devices() -> None:
    assert linux_resources(Resources(), V1, []) == {"devices": []}


def test_swap_given_pids_and_unified_v2() -> None:
    res = Resources(memory_limit_in_bytes=100, memory_swap_limit_in_bytes=300,
                    unified={"memory.high": "90"})
    assert linux_resources(res, V2, []) == {
        "devices": [],
        "memory": {"limit": 100, "swap": 300},
        "pids": {"limit": 1024},
        "unified": {"memory.high": "90"},
    }


def test_no_swap_accounting_means_no_swap_entry() -> None:
    daemon = DaemonFacts(bounding_set=frozenset(), swap_accounting=False)
    res = Resources(memory_limit_in_bytes=100, memory_swap_limit_in_bytes=300)
    assert linux_resources(res, daemon, [])["memory"] == {"limit": 100}


def test_invalid_resources() -> None:
    with pytest.raises(InvalidArgument, match="cgroup v1"):
        linux_resources(Resources(unified={"memory.high": "1"}), V1, [])
    with pytest.raises(InvalidArgument, match="2MB or 1GB"):
        linux_resources(Resources(hugepage_limits=(HugepageLimit("2M", 1),)), V1, [])
    with pytest.raises(InvalidArgument, match="below memory_limit"):
        linux_resources(Resources(memory_limit_in_bytes=100, memory_swap_limit_in_bytes=50),
                        V1, [])
    with pytest.raises(InvalidArgument, match="negative"):
        linux_resources(Resources(memory_limit_in_bytes=-1), V1, [])
    with pytest.raises(InvalidArgument, match="minimum of 2"):
        linux_resources(Resources(cpu_shares=1), V1, [])


POD = SandboxFacts(netns_path="/run/netns/p", ipcns_path="/run/ipcns/p",
                   utsns_path="/run/utsns/p", pidns_path="/proc/42/ns/pid")


class TestNamespaces:
    def test_pod_mode_joins_everything(self) -> None:
        assert linux_namespaces(NamespaceOptions(), POD, cgroup_v2=False) == [
            {"type": "mount"},
            {"type": "network", "path": "/run/netns/p"},
            {"type": "uts", "path": "/run/utsns/p"},
            {"type": "ipc", "path": "/run/ipcns/p"},
            {"type": "pid", "path": "/proc/42/ns/pid"},
        ]

    def test_container_pid_and_cgroup_v2(self) -> None:
        spaces = linux_namespaces(NamespaceOptions(pid=NamespaceMode.CONTAINER), POD,
                                  cgroup_v2=True)
        assert spaces[-2:] == [{"type": "pid"}, {"type": "cgroup"}]

    def test_host_namespaces_are_left_out(self) -> None:
        host = SandboxFacts(host_network=True, host_ipc=True, host_pid=True)
        assert linux_namespaces(NamespaceOptions(pid=NamespaceMode.NODE), host,
                                cgroup_v2=False) == [{"type": "mount"}]
        assert linux_namespaces(NamespaceOptions(), host, cgroup_v2=False) == [{"type": "mount"}]

    def test_new_namespaces_when_sandbox_has_no_paths(self) -> None:
        spaces = linux_namespaces(NamespaceOptions(pid=NamespaceMode.CONTAINER), SandboxFacts(),
                                  cgroup_v2=False)
        assert spaces == [{"type": "mount"}, {"type": "network"}, {"type": "uts"},
                          {"type": "ipc"}, {"type": "pid"}]

    def test_target(self) -> None:
        options = NamespaceOptions(pid=NamespaceMode.TARGET, target_id="abc")
        spaces = linux_namespaces(options, POD, cgroup_v2=False,
                                  target_pidns_path="/proc/77/ns/pid")
        assert spaces[-1] == {"type": "pid", "path": "/proc/77/ns/pid"}
        with pytest.raises(InvalidArgument, match="'abc'"):
            linux_namespaces(options, POD, cgroup_v2=False)

    def test_pod_pid_without_infra_namespace(self) -> None:
        with pytest.raises(FailedPrecondition, match="pid namespace"):
            linux_namespaces(NamespaceOptions(), SandboxFacts(), cgroup_v2=False)


class TestDevices:
    def test_dev_null_node_and_rule(self) -> None:
        st = os.stat("/dev/null")
        nodes, rules = device_rules_and_nodes([Device("/dev/mynull", "/dev/null", "rw")],
                                              privileged=False)
        assert nodes == [{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                          "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid,
                          "gid": st.st_gid}]
        assert rules == [DENY_ALL, {"allow": True, "type": "c", "major": 1, "minor": 3,
                                    "access": "rw"}]

    def test_default_permissions_and_nothing_requested(self) -> None:
        _, rules = device_rules_and_nodes([Device("/dev/null", "/dev/null", "")],
                                          privileged=False)
        assert rules[1]["access"] == "rwm"
        assert device_rules_and_nodes([], privileged=False) == ([], [DENY_ALL])

    def test_bad_devices(self, tmp_path: os.PathLike[str]) -> None:
        with pytest.raises(InvalidArgument, match="permissions"):
            device_rules_and_nodes([Device("/dev/null", "/dev/null", "rwx")], privileged=False)
        with pytest.raises(InvalidArgument, match="does not exist"):
            device_rules_and_nodes([Device("/dev/x", "/dev/peapod-missing")], privileged=False)
        with pytest.raises(InvalidArgument, match="not a device"):
            device_rules_and_nodes([Device("/dev/x", "/etc/hostname")], privileged=False)
        with pytest.raises(InvalidArgument, match="absolute"):
            device_rules_and_nodes([Device("dev/x", "/dev/null")], privileged=False)
        assert device_node("/etc/hostname", "/x") is None

    def test_directory_of_devices(self, tmp_path: os.PathLike[str]) -> None:
        if os.geteuid() != 0:
            pytest.skip("creating device nodes needs root")
        base = os.path.join(tmp_path, "snd")
        os.makedirs(os.path.join(base, "sub"))
        os.mknod(os.path.join(base, "sub", "ctl"), 0o600 | stat.S_IFCHR, os.makedev(116, 7))
        open(os.path.join(base, "notadevice"), "w").close()
        nodes, rules = device_rules_and_nodes([Device("/dev/snd", base, "r")], privileged=False)
        found = [(n["path"], n["major"], n["minor"]) for n in nodes]
        assert found == [("/dev/snd/sub/ctl", 116, 7)]
        assert rules[1] == {"allow": True, "type": "c", "major": 116, "minor": 7, "access": "r"}

    def test_privileged_gets_host_devices_and_all_access(self) -> None:
        nodes, rules = device_rules_and_nodes([], privileged=True)
        paths = {n["path"] for n in nodes}
        assert "/dev/null" in paths and "/dev/console" not in paths
        assert not [p for p in paths if os.path.islink(p)]  # e.g. /dev/stdin, /dev/fd
        assert not any(p.startswith(("/dev/pts/", "/dev/shm/")) for p in paths)
        assert rules == [{"allow": True, "access": "rwm"}]
