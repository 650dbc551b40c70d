"""Request validation in cri: enums, names, maps, ids, resources, and short error messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest

from api import api_pb2 as pb
from base.errors import InvalidArgument, NotFound
from cri.call import object_id, possible_id
from cri.config import Config
from cri.convert import sandbox as sandbox_convert
from cri.convert.container import create_request
from cri.convert.resources import cpuset, resources
from cri.convert.validate import choice, object_name, string_map
from cri.grpc_status import MESSAGE_LIMIT, status_for
from oci.spec.inputs import NamespaceMode

HUGE = "x" * (1 << 20)


def short(call: Callable[[], Any], error: type[Exception] = InvalidArgument,
          words: str = "") -> str:  # fmt: skip
    """The message of the error ``call`` raises, checked to be short and to hold ``words``."""
    with pytest.raises(error) as err:
        call()
    message = str(err.value)
    assert len(message) < 400, message[:500]
    assert words in message, message
    return message


def test_choice_maps_known_values_and_names_the_others() -> None:
    table = {pb.POD: "pod", pb.NODE: "node"}
    assert choice(pb.NamespaceMode, table, pb.NODE, "mode") == "node"
    assert "mode TARGET is not supported; use one of POD, NODE" in short(
        lambda: choice(pb.NamespaceMode, table, pb.TARGET, "mode"))
    assert "mode 99 is not supported" in short(
        lambda: choice(pb.NamespaceMode, table, 99, "mode"))


def test_object_names() -> None:
    assert object_name("web-1.x_y", "name") == "web-1.x_y"
    # Non-ASCII (a C1 control, a private-use character) made conmon exit 1: INTERNAL.
    for bad in ("", "a/b", "a b", "a\0b", "a;b", "a=b", "x" * 254, HUGE, "\U000fb567\x93\xd8",
                "caf\xe9"):
        short(lambda bad=bad: object_name(bad, "metadata.name"), words="metadata.name")


def test_string_maps() -> None:
    assert string_map({"a/b": "multi\nline {json}"}, "labels") == {"a/b": "multi\nline {json}"}
    for bad in ({"": "v"}, {"a\nb": "v"}, {"k" * 400: "v"}, {"k": "a\0b"}, {"k": HUGE}):
        short(lambda bad=bad: string_map(bad, "annotations"), words="annotations")


def test_ids() -> None:
    assert object_id("ab" * 32, "id", "an id") == "ab" * 32
    short(lambda: object_id("", "Req.container_id", "an id"), InvalidArgument, "is empty")
    short(lambda: object_id(HUGE, "Req.container_id", "an id"), NotFound, "Req.container_id")
    short(lambda: object_id("ab\ncd", "Req.container_id", "an id"), NotFound)
    assert possible_id("abc", "id", "an id") and not possible_id(HUGE, "id", "an id")


def test_status_messages_are_bounded() -> None:
    code, message = status_for(NotFound(f"container {HUGE} not found"))
    assert code == grpc.StatusCode.NOT_FOUND and len(message) <= MESSAGE_LIMIT
    assert message.startswith("container xxx") and message.endswith("xxx not found")
    assert f"({len(HUGE) + 20} characters)" in message
    assert status_for(NotFound("short"))[1] == "short"
    code, message = status_for(ValueError(HUGE))
    assert code == grpc.StatusCode.INTERNAL and len(message) <= MESSAGE_LIMIT


# ---- resources: the kernel's ranges, on create and on update -----------------------


@pytest.mark.parametrize("values,words", [
    ({"cpu_shares": 1}, "cpu_shares"), ({"cpu_shares": 262145}, "cpu_shares"),
    ({"cpu_quota": 999}, "cpu_quota"), ({"cpu_quota": -2}, "cpu_quota"),
    ({"cpu_period": 999}, "cpu_period"), ({"cpu_period": 1_000_001}, "cpu_period"),
    ({"memory_limit_in_bytes": 4096}, "memory_limit_in_bytes"),
    ({"memory_limit_in_bytes": -1}, "memory_limit_in_bytes"),
    ({"memory_swap_limit_in_bytes": -2}, "memory_swap"),
    ({"oom_score_adj": 1001}, "oom_score_adj"), ({"oom_score_adj": -1001}, "oom_score_adj"),
    ({"cpuset_cpus": "0-abc"}, "cpuset_cpus"), ({"cpuset_mems": "0,,1"}, "cpuset_mems"),
    ({"cpuset_cpus": "3-1"}, "cpuset_cpus"), ({"cpuset_cpus": "99999"}, "cpuset_cpus"),
    ({"cpuset_cpus": "0\n"}, "cpuset_cpus"), ({"cpuset_cpus": "0," * 1000}, "cpuset_cpus"),
    ({"unified": {"../../cpu.max": "1"}}, "unified"), ({"unified": {"memory.high": "1\n2"}},
                                                         "unified"),
    ({"hugepage_limits": [pb.HugepageLimit(page_size=HUGE)]}, "page_size"),
])  # fmt: skip
def test_resources_out_of_range_are_invalid(values: dict[str, Any], words: str) -> None:
    short(lambda: resources(pb.LinuxContainerResources(**values)), words=words)


def test_resources_in_range_and_unset_values_pass() -> None:
    r = resources(pb.LinuxContainerResources(
        cpu_shares=2, cpu_quota=-1, cpu_period=100000, memory_limit_in_bytes=12 << 20,
        memory_swap_limit_in_bytes=-1, oom_score_adj=-1000, cpuset_cpus="0-3,8,10-11",
        cpuset_mems="0", unified={"memory.high": "max"},
    ))  # fmt: skip
    assert (r.cpu_shares, r.cpu_quota, r.cpuset_cpus) == (2, -1, "0-3,8,10-11")
    assert resources(pb.LinuxContainerResources()).cpu_shares == 0  # zero: unset
    assert cpuset("", "cpuset_cpus") == ""


# ---- CreateContainer ------------------------------------------------------------------


def request(**config: Any) -> pb.CreateContainerRequest:
    linux = config.pop("linux", None)
    config.setdefault("metadata", pb.ContainerMetadata(name="web"))
    config.setdefault("image", pb.ImageSpec(image="busybox"))
    cfg = pb.ContainerConfig(command=["sleep"], **config)
    if linux is not None:
        cfg.linux.CopyFrom(linux)
    return pb.CreateContainerRequest(pod_sandbox_id="ab" * 32, config=cfg)


def security(**kw: Any) -> pb.LinuxContainerConfig:
    return pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(**kw))


def namespaces(**kw: Any) -> pb.LinuxContainerConfig:
    return security(namespace_options=pb.NamespaceOption(**kw))


BAD_CONTAINERS: list[tuple[dict[str, Any], str]] = [
    ({"linux": namespaces(network=99)}, "namespace_options.network"),
    ({"linux": namespaces(ipc=pb.TARGET)}, "namespace_options.ipc TARGET"),
    ({"linux": namespaces(network=pb.TARGET)}, "namespace_options.network TARGET"),
    ({"linux": namespaces(pid=7)}, "namespace_options.pid"),
    ({"linux": security(seccomp=pb.SecurityProfile(profile_type=9))}, "profile_type"),
    ({"linux": security(supplemental_groups_policy=5)}, "supplemental_groups_policy"),
    ({"linux": security(masked_paths=["/proc/x\0"])}, "masked_paths"),
    ({"linux": security(run_as_username=HUGE)}, "run_as_username"),
    ({"linux": security(seccomp_profile_path="localhost/" + HUGE)}, "seccomp"),
    ({"mounts": [pb.Mount(container_path="/d", host_path="/h", propagation=9)]}, "propagation"),
    ({"mounts": [pb.Mount(container_path="/", host_path="/h")]}, "container_path"),
    ({"mounts": [pb.Mount(container_path="/proc/sys", host_path="/h")]}, "container_path"),
    ({"mounts": [pb.Mount(container_path="/d\0", host_path="/h")]}, "container_path"),
    ({"mounts": [pb.Mount(container_path="/d", host_path="/" + HUGE)]}, "host_path"),
    ({"mounts": [pb.Mount(container_path="/d", host_path="/h", mount_options=[HUGE])]},
     "option"),
    ({"devices": [pb.Device(container_path="/dev/x\n", host_path="/dev/null")]}, "device"),
    ({"metadata": pb.ContainerMetadata(name="")}, "metadata.name"),
    ({"metadata": pb.ContainerMetadata(name="a/b")}, "metadata.name"),
    ({"metadata": pb.ContainerMetadata(name=HUGE)}, "metadata.name"),
    ({"image": pb.ImageSpec(image=HUGE)}, "image.image"),
    ({"image": pb.ImageSpec(image="busybox", annotations={"a": "\0"})}, "ImageSpec"),
    ({"log_path": "../../x.log"}, "log_path"),
    ({"log_path": "/abs.log"}, "log_path"),
    ({"working_dir": "/a\0b"}, "working_dir"),
    ({"working_dir": "/" + HUGE}, "working_dir"),
    ({"args": ["a\0b"]}, "NUL"),
    ({"args": ["x" * (200 << 10)]}, "per string"),
    ({"envs": [pb.KeyValue(key="A", value=b"b\0")]}, "NUL"),
    ({"envs": [pb.KeyValue(key="A\0", value=b"b")]}, "NUL"),
    ({"envs": [pb.KeyValue(key="", value=b"b")]}, "environment variable"),
    ({"labels": {"a\0": "b"}}, "labels"),
    ({"annotations": {"a": "b\0"}}, "annotations"),
    ({"stop_signal": 999}, "stop_signal"),
]


@pytest.mark.parametrize("config,words", BAD_CONTAINERS, ids=[w for _, w in BAD_CONTAINERS])
def test_bad_container_requests_are_invalid(config: dict[str, Any], words: str) -> None:
    short(lambda: create_request(request(**config)), words=words)


def test_oversized_pod_and_target_ids_are_not_found() -> None:
    bad = request()
    bad.pod_sandbox_id = HUGE
    short(lambda: create_request(bad), NotFound, "pod_sandbox_id")
    target = request(linux=namespaces(pid=pb.TARGET, target_id=HUGE))
    short(lambda: create_request(target), NotFound, "target_id")


def test_pid_target_stays_allowed() -> None:
    out = create_request(request(linux=namespaces(pid=pb.TARGET, target_id="ab" * 32)))
    assert out.container.security.namespace_options.pid is NamespaceMode.TARGET


# ---- RunPodSandbox -----------------------------------------------------------------------


def pod(**kw: Any) -> pb.PodSandboxConfig:
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="web", uid="u1", namespace="default"), **kw
    )
    return cfg


BAD_PODS: list[tuple[Callable[[pb.PodSandboxConfig], None], str]] = [
    (lambda c: setattr(c.linux.security_context.namespace_options, "network", 99), "network"),
    (lambda c: setattr(c.linux.security_context.namespace_options, "ipc", 42), "ipc"),
    (lambda c: setattr(c, "log_directory", "/" + HUGE), "log_directory"),
    (lambda c: setattr(c, "log_directory", "/a\0b"), "log_directory"),
    (lambda c: c.port_mappings.append(pb.PortMapping(container_port=80, host_port=8080,
                                                     host_ip="fe80::1%eth0")), "host_ip"),
    (lambda c: c.port_mappings.append(pb.PortMapping(container_port=80, protocol=9)),
     "protocol"),
    (lambda c: c.dns_config.servers.append("fe80::1%eth0\nnameserver 6.6.6.6"), "DNS server"),
    (lambda c: c.dns_config.servers.extend(["10.0.0.1"] * 4), "DNS servers"),
    (lambda c: c.dns_config.options.append("x" * 100), "DNS option"),
    (lambda c: c.linux.sysctls.__setitem__("net.ipv4.ip_forward", "1" * (1 << 20)), "sysctl"),
    (lambda c: c.linux.sysctls.__setitem__(HUGE, "1"), "sysctl name"),
    (lambda c: setattr(c.linux, "cgroup_parent", "/" + HUGE), "cgroup_parent"),
    (lambda c: c.annotations.__setitem__("kubernetes.io/ingress-bandwidth", "1e999999999"),
     "bandwidth"),
    (lambda c: c.labels.__setitem__("a", "b\0"), "labels"),
    (lambda c: setattr(c, "hostname", HUGE), "hostname"),
]


@pytest.mark.parametrize("change,words", BAD_PODS, ids=[w for _, w in BAD_PODS])
def test_bad_pod_configs_are_invalid(change: Callable[[pb.PodSandboxConfig], None],
                                     words: str) -> None:  # fmt: skip
    cfg = pod()
    change(cfg)
    short(lambda: sandbox_convert.pod_config(cfg, Config()), words=words)


def test_host_network_hostname_is_still_checked_for_control_characters() -> None:
    cfg = pod(hostname="web\n127.0.0.1 evil")
    cfg.linux.security_context.namespace_options.network = pb.NODE
    short(lambda: sandbox_convert.pod_config(cfg, Config()), words="hostname")


def test_sandbox_filter_state_out_of_range_is_invalid() -> None:
    flt = pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=7))
    short(lambda: sandbox_convert.sandbox_filter(flt), words="filter state")
