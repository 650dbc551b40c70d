"""Plugins' adjustments on an OCI spec: ownership, removals, conflicts, what cannot be done."""

from __future__ import annotations

import resource
from typing import Any

import pytest
from google.protobuf import json_format

from api import nri_pb2
from nri.adjust import Invalid, NodeSupport, SpecAdjuster, Unsupported, seccomp
from nri.owners import Conflict, Owners
from nri.updates import UpdateSet, merge_resources
from oci.spec.inputs import Resources

V1 = NodeSupport(cgroup_v2=False, swap_accounting=True, hugetlb=True, own_oom_score_adj=-500)


def spec() -> dict[str, Any]:
    return {
        "process": {"args": ["sh"], "env": ["PATH=/bin", "KEEP=1", "DROP=1"],
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/data", "type": "bind", "source": "/old"}],
        "annotations": {"a": "1", "gone": "x"},
        "linux": {"resources": {"devices": [{"allow": False, "access": "rwm"}]}},
    }


def adjustment(doc: dict[str, Any]) -> nri_pb2.ContainerAdjustment:
    return json_format.ParseDict(doc, nri_pb2.ContainerAdjustment())


def adjuster(s: dict[str, Any], node: NodeSupport = V1) -> SpecAdjuster:
    return SpecAdjuster("c1", s, dict(s["annotations"]), Owners(), node)


def test_env_mounts_annotations_and_args_with_removals() -> None:
    s = spec()
    a = adjuster(s)
    a.apply(adjustment({
        "env": [{"key": "NEW", "value": "v"}, {"key": "KEEP", "value": "2"}, {"key": "-DROP"}],
        "mounts": [{"destination": "/data", "source": "/new", "type": "bind",
                    "options": ["ro"]}, {"destination": "-/proc"}],
        "annotations": {"b": "2", "-gone": ""},
        "args": ["", "sleep", "1"],
    }), "10-a")
    assert s["process"]["env"] == ["PATH=/bin", "KEEP=2", "NEW=v"]
    assert s["mounts"] == [{"destination": "/data", "type": "bind", "source": "/new",
                            "options": ["ro", "rbind"]}]
    assert s["annotations"] == {"a": "1", "b": "2"} and a.annotations == {"a": "1", "b": "2"}
    assert s["process"]["args"] == ["sleep", "1"]


def test_resources_devices_hooks_rlimits_and_linux_fields() -> None:
    s = spec()
    adjuster(s).apply(adjustment({
        "linux": {
            "resources": {"cpu": {"cpus": "0-1", "shares": {"value": 512}},
                          "memory": {"limit": {"value": 1 << 26},
                                     "swappiness": {"value": 10}},
                          "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
                          "pids": {"limit": 64}},
            "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}],
            "oomScoreAdj": {"value": -900},
            "sysctl": {"net.ipv4.ip_forward": "1"},
            "namespaces": [{"type": "-cgroup"}],
        },
        "hooks": {"prestart": [{"path": "/bin/true", "args": ["true"]}]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}],
    }), "10-a")
    res = s["linux"]["resources"]
    assert res["cpu"] == {"cpus": "0-1", "shares": 512}
    assert res["memory"] == {"limit": 1 << 26, "swappiness": 10}
    assert res["hugepageLimits"] == [{"pageSize": "2MB", "limit": 4194304}]
    assert res["pids"] == {"limit": 64}
    assert res["devices"][-1] == {"allow": True, "type": "c", "major": 10, "minor": 229,
                                  "access": "rwm"}
    assert s["linux"]["devices"] == [{"path": "/dev/fuse", "type": "c", "major": 10,
                                      "minor": 229}]
    assert s["process"]["oomScoreAdj"] == -500  # no lower than peapod's own, as for CRI
    assert s["linux"]["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert s["hooks"] == {"prestart": [{"path": "/bin/true", "args": ["true"]}]}
    assert s["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]


def test_a_second_plugin_touching_the_same_entry_is_a_conflict_naming_both() -> None:
    a = adjuster(spec())
    a.apply(adjustment({"env": [{"key": "X", "value": "1"}],
                        "linux": {"resources": {"cpu": {"cpus": "0"}}}}), "10-a")
    a.apply(adjustment({"env": [{"key": "Y", "value": "1"}]}), "20-b")  # another entry: fine
    with pytest.raises(Conflict, match="plugins 20-b and 10-a both tried to set Env 'X'"):
        a.apply(adjustment({"env": [{"key": "-X"}]}), "20-b")
    with pytest.raises(Conflict, match="CPUSetCPUs"):
        a.apply(adjustment({"linux": {"resources": {"cpu": {"cpus": "1"}}}}), "30-c")
    # The same plugin may change its mind; hooks accumulate from everyone.
    a.apply(adjustment({"env": [{"key": "X", "value": "2"}]}), "10-a")
    a.apply(adjustment({"hooks": {"poststop": [{"path": "/bin/true"}]}}), "10-a")
    a.apply(adjustment({"hooks": {"poststop": [{"path": "/bin/false"}]}}), "20-b")
    owners = a.owners.message().owners["c1"]
    assert owners.simple[nri_pb2.Field.Value("OciHooks")] == "10-a,20-b"
    assert owners.compound[nri_pb2.Field.Value("Env")].owners["X"] == "10-a"


@pytest.mark.parametrize(("doc", "words"), [
    ({"CDIDevices": [{"name": "vendor.com/gpu=0"}]}, "CDI devices"),
    ({"linux": {"ioPriority": {"class": "IOPRIO_CLASS_RT"}}}, "I/O priority"),
    ({"linux": {"scheduler": {"policy": "SCHED_FIFO"}}}, "scheduling"),
    ({"linux": {"memoryPolicy": {"mode": "MPOL_BIND", "nodes": "0"}}}, "memory policy"),
    ({"linux": {"netDevices": {"eth1": {"name": "net1"}}}}, "network devices"),
    ({"linux": {"rdt": {"closId": {"value": "gold"}}}}, "RDT"),
    ({"linux": {"resources": {"blockioClass": {"value": "slow"}}}}, "block I/O class"),
    ({"linux": {"resources": {"rdtClass": {"value": "gold"}}}}, "RDT class"),
    ({"linux": {"resources": {"memory": {"kernel": {"value": 1}}}}}, "kernel memory"),
    ({"linux": {"resources": {"unified": {"memory.high": "1G"}}}}, "cgroup v2 only"),
])
def test_what_the_node_cannot_do_is_unsupported(doc: dict[str, Any], words: str) -> None:
    with pytest.raises(Unsupported, match=words):
        adjuster(spec()).apply(adjustment(doc), "10-a")


def test_node_support_decides() -> None:
    no_swap = NodeSupport(swap_accounting=False)
    with pytest.raises(Unsupported, match="swap accounting"):
        adjuster(spec(), no_swap).apply(
            adjustment({"linux": {"resources": {"memory": {"swap": {"value": 1}}}}}), "10-a")
    v2 = NodeSupport(cgroup_v2=True, swap_accounting=True)
    s = spec()
    adjuster(s, v2).apply(adjustment({"linux": {"resources": {"unified": {"a": "b"}}}}), "10-a")
    assert s["linux"]["resources"]["unified"] == {"a": "b"}
    with pytest.raises(Unsupported, match="cgroup v1 only"):
        adjuster(spec(), v2).apply(adjustment(
            {"linux": {"resources": {"memory": {"swappiness": {"value": 1}}}}}), "10-a")


def test_raising_a_hard_rlimit_needs_cap_sys_resource() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.fail("this test needs a finite RLIMIT_NOFILE hard limit")
    doc = {"rlimits": [{"type": "RLIMIT_NOFILE", "hard": str(hard + 1), "soft": "1"}]}
    with pytest.raises(Unsupported, match="CAP_SYS_RESOURCE"):
        adjuster(spec()).apply(adjustment(doc), "10-a")
    s = spec()
    adjuster(s, NodeSupport(can_raise_limits=True)).apply(adjustment(doc), "10-a")
    assert s["process"]["rlimits"][-1]["hard"] == hard + 1


@pytest.mark.parametrize(("doc", "words"), [
    ({"mounts": [{"destination": "relative", "source": "/x"}]}, "not an absolute path"),
    ({"env": [{"key": "A=B", "value": "x"}]}, "environment variable name"),
    ({"args": [""]}, "empty command line"),
    ({"hooks": {"prestart": [{"path": "true"}]}}, "not absolute"),
    ({"rlimits": [{"type": "RLIMIT_BOGUS", "hard": "1"}]}, "rlimit type"),
    ({"rlimits": [{"type": "RLIMIT_NOFILE", "hard": "1", "soft": "2"}]}, "above its hard"),
    ({"linux": {"devices": [{"path": "/tmp/x", "type": "c"}]}}, "not under /dev"),
    ({"linux": {"devices": [{"path": "/dev/x", "type": "z"}]}}, "not one of"),
    ({"linux": {"namespaces": [{"type": "bogus"}]}}, "namespace type"),
    ({"linux": {"resources": {"hugepageLimits": [{"pageSize": "2M"}]}}}, "page size"),
])
def test_nonsense_is_invalid(doc: dict[str, Any], words: str) -> None:
    with pytest.raises(Invalid, match=words):
        adjuster(spec()).apply(adjustment(doc), "10-a")


def test_seccomp_policy_in_oci_form() -> None:
    policy = json_format.ParseDict({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrno": {"value": 1},
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": "1", "op": "SCMP_CMP_EQ"}]}],
    }, nri_pb2.LinuxSeccomp())
    assert seccomp(policy) == {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 1, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}],
    }


def test_updates_merge_per_container_and_conflict_across_plugins() -> None:
    updates = UpdateSet(Owners())
    first = nri_pb2.ContainerUpdate(container_id="c2", ignore_failure=True)
    first.linux.resources.cpu.cpus = "1"
    second = nri_pb2.ContainerUpdate(container_id="c2")
    second.linux.resources.memory.limit.value = 1 << 30
    updates.add([first], "10-a")
    updates.add([second], "20-b")
    pending = updates.by_container["c2"]
    assert pending.resources == Resources(cpuset_cpus="1", memory_limit_in_bytes=1 << 30)
    assert pending.plugins == ["10-a", "20-b"] and not pending.ignore_failure
    clash = nri_pb2.ContainerUpdate(container_id="c2")
    clash.linux.resources.cpu.cpus = "0"
    with pytest.raises(Conflict, match="20-b and 10-a"):
        updates.add([clash], "20-b")
    with pytest.raises(Unsupported, match="while it is being created"):
        UpdateSet(Owners()).add([first], "10-a", forbid="c2")


def test_update_fields_the_runtime_cannot_change_are_unsupported() -> None:
    res = nri_pb2.LinuxResources()
    res.memory.reservation.value = 1
    with pytest.raises(Unsupported, match="reservation"):
        merge_resources(Resources(), res, "c", "10-a", Owners())
