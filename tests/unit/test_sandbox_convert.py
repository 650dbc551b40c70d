"""Unit tests for PodSandboxConfig validation/conversion and record-to-message conversion."""

from __future__ import annotations

import json

import pytest

from api import api_pb2 as pb
from base.errors import InvalidArgument
from cni.capabilities import PortMapping
from cri.config import Config
from cri.convert import sandbox as conv
from sandbox.pod_config import CONTAINER, NODE, POD, PodMetadata
from sandbox.record import NOTREADY, READY, SandboxRecord


def cfg(**kw: object) -> pb.PodSandboxConfig:
    base = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="web", uid="uid-1", namespace="default", attempt=2)
    )
    for key, value in kw.items():
        if isinstance(value, dict) and key in ("labels", "annotations"):
            getattr(base, key).update(value)
        elif key == "port_mappings":
            base.port_mappings.extend(value)  # type: ignore[arg-type]
        else:
            getattr(base, key).CopyFrom(value) if hasattr(value, "CopyFrom") else setattr(
                base, key, value)
    return base


def linux(sysctls: dict[str, str] | None = None, **ns: int) -> pb.LinuxPodSandboxConfig:
    out = pb.LinuxPodSandboxConfig(
        security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(**ns)
        )
    )
    out.sysctls.update(sysctls or {})
    return out


def test_full_config_converts() -> None:
    c = cfg(
        hostname="web-0",
        log_directory="/var/log/pods/x",
        dns_config=pb.DNSConfig(servers=["10.0.0.10"], searches=["svc.local"],
                                options=["ndots:5"]),
        port_mappings=[pb.PortMapping(protocol=pb.UDP, container_port=53, host_port=5353,
                                      host_ip="127.0.0.1")],
        labels={"app": "web"},
        annotations={"kubernetes.io/ingress-bandwidth": "10M"},
        linux=linux({"net.ipv4.ip_forward": "1"}, pid=pb.CONTAINER),
    )
    c.linux.cgroup_parent = "/kubepods/pod1"
    c.linux.security_context.privileged = True
    c.linux.resources.cpu_shares = 512
    pod = conv.pod_config(c, Config())
    assert pod.metadata == PodMetadata("web", "uid-1", "default", 2)
    assert pod.metadata.sandbox_name() == "k8s_web_default_uid-1_2"
    assert pod.hostname == "web-0"
    assert pod.dns is not None and tuple(pod.dns.options) == ("ndots:5",)
    assert pod.port_mappings == (PortMapping(5353, 53, "udp", "127.0.0.1"),)
    assert pod.labels == {"app": "web"}
    assert pod.sysctls == {"net.ipv4.ip_forward": "1"}
    assert pod.pid_mode == CONTAINER and not pod.host_network and not pod.host_ipc
    assert pod.cgroup_parent == "/kubepods/pod1"
    assert pod.security["privileged"] is True
    assert "namespace_options" not in pod.security
    assert pod.resources == {"cpu_shares": "512"}
    assert pod.bandwidth() == (10_000_000, None)


def test_defaults_give_pod_pid_mode_and_own_namespaces() -> None:
    pod = conv.pod_config(cfg(), Config())
    assert pod.pid_mode == POD
    assert not pod.host_network and not pod.host_ipc and not pod.host_pid
    assert pod.dns is None and pod.port_mappings == ()


def test_host_namespaces() -> None:
    pod = conv.pod_config(cfg(linux=linux(network=pb.NODE, ipc=pb.NODE, pid=pb.NODE)), Config())
    assert pod.host_network and pod.host_ipc and pod.host_pid and pod.pid_mode == NODE


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("name", "", "metadata.name is empty"),
        ("uid", "", "metadata.uid is empty"),
        ("namespace", "", "metadata.namespace is empty"),
        ("name", "a/b", "metadata.name 'a/b' is not valid"),
        ("uid", "x;y", "metadata.uid 'x;y' is not valid"),
        ("namespace", "a b", "metadata.namespace 'a b' is not valid"),
    ],
)
def test_metadata_is_required_and_checked(field: str, value: str, needle: str) -> None:
    c = cfg()
    setattr(c.metadata, field, value)
    with pytest.raises(InvalidArgument, match=needle):
        conv.pod_config(c, Config())


@pytest.mark.parametrize(
    ("mapping", "needle"),
    [
        (pb.PortMapping(protocol=7, container_port=80), "protocol 7"),
        (pb.PortMapping(container_port=0, host_port=80), "container_port 0"),
        (pb.PortMapping(container_port=70000), "container_port 70000"),
        (pb.PortMapping(container_port=80, host_port=-1), "host_port -1"),
        (pb.PortMapping(container_port=80, host_port=8080, host_ip="nope"), "host_ip 'nope'"),
    ],
)
def test_bad_port_mappings(mapping: pb.PortMapping, needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        conv.pod_config(cfg(port_mappings=[mapping]), Config())


def test_container_port_only_mapping_is_accepted() -> None:
    pod = conv.pod_config(cfg(port_mappings=[pb.PortMapping(container_port=80)]), Config())
    assert pod.port_mappings == (PortMapping(0, 80, "tcp", ""),)


@pytest.mark.parametrize(
    ("sysctls", "ns", "needle"),
    [
        ({"kernel.hostname": "x"}, {}, "not namespaced"),
        ({"vm.swappiness": "10"}, {}, "not namespaced"),
        ({"net.ipv4.no_such_thing": "1"}, {}, "does not exist"),
        ({"net.ipv4.ip_forward": "1"}, {"network": pb.NODE}, "host's network namespace"),
        ({"kernel.shmmax": "1"}, {"ipc": pb.NODE}, "host's IPC namespace"),
    ],
)
def test_bad_sysctls(sysctls: dict[str, str], ns: dict[str, int], needle: str) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        conv.pod_config(cfg(linux=linux(sysctls, **ns)), Config())


def test_slash_form_sysctl_is_accepted() -> None:
    pod = conv.pod_config(cfg(linux=linux({"net/ipv4/ip_forward": "1"})), Config())
    assert pod.sysctls == {"net/ipv4/ip_forward": "1"}


@pytest.mark.parametrize("field", ["network", "ipc", "pid"])
def test_target_mode_is_rejected_for_pods(field: str) -> None:
    with pytest.raises(InvalidArgument, match=f"namespace_options.{field} mode TARGET"):
        conv.pod_config(cfg(linux=linux(**{field: pb.TARGET})), Config())


def test_other_invalid_fields() -> None:
    with pytest.raises(InvalidArgument, match="hostname"):
        conv.pod_config(cfg(hostname="-bad-"), Config())
    with pytest.raises(InvalidArgument, match="DNS server"):
        conv.pod_config(cfg(dns_config=pb.DNSConfig(servers=["dns.example"])), Config())
    with pytest.raises(InvalidArgument, match="log_directory"):
        conv.pod_config(cfg(log_directory="relative/dir"), Config())
    lx = linux()
    lx.cgroup_parent = "kubepods"
    with pytest.raises(InvalidArgument, match="absolute path"):
        conv.pod_config(cfg(linux=lx), Config())
    with pytest.raises(InvalidArgument, match=r"kubernetes\.io/egress-bandwidth"):
        conv.pod_config(cfg(annotations={"kubernetes.io/egress-bandwidth": "fast"}), Config())


def test_host_network_pod_hostname_is_not_validated() -> None:
    # A host-network pod gets the host's hostname; the requested one is ignored.
    pod = conv.pod_config(cfg(hostname="-bad-", linux=linux(network=pb.NODE)), Config())
    assert pod.host_network
    with pytest.raises(InvalidArgument, match="hostname"):
        conv.pod_config(cfg(hostname="-bad-"), Config())


def record(**kw: object) -> SandboxRecord:
    values: dict[str, object] = dict(
        id="ab" * 32, name="k8s_web_default_uid-1_2",
        metadata=PodMetadata("web", "uid-1", "default", 2), state=READY, created_at=123,
        labels={"app": "web"}, annotations={"a": "b"}, runtime_handler="runc",
        ips=["10.1.0.5", "fd00::5"], pid_mode=CONTAINER, host_ipc=True,
        ns_paths={"net": "/run/p/ns/net"}, pod_dir="/run/p",
    )
    values.update(kw)
    return SandboxRecord(**values)  # type: ignore[arg-type]


def test_status_message() -> None:
    st = conv.to_pb_status(record())
    assert st.id == "ab" * 32 and st.created_at == 123
    assert st.state == pb.SANDBOX_READY
    assert st.metadata.attempt == 2 and st.metadata.uid == "uid-1"
    assert st.network.ip == "10.1.0.5"
    assert [i.ip for i in st.network.additional_ips] == ["fd00::5"]
    opts = st.linux.namespaces.options
    assert (opts.network, opts.ipc, opts.pid) == (pb.POD, pb.NODE, pb.CONTAINER)
    assert dict(st.labels) == {"app": "web"} and dict(st.annotations) == {"a": "b"}
    assert st.runtime_handler == "runc"
    assert conv.to_pb_status(record(state=NOTREADY, ips=[])).state == pb.SANDBOX_NOTREADY
    assert conv.to_pb_status(record(ips=[])).network.ip == ""


def test_list_item_and_verbose_info() -> None:
    item = conv.to_pb_sandbox(record())
    assert item.id == "ab" * 32 and item.metadata.name == "web" and item.runtime_handler == "runc"
    info = json.loads(conv.verbose_info(record(infra={"pid": 42}))["info"])
    assert info["netns"] == "/run/p/ns/net"
    assert info["infraPid"] == 42
    assert info["resolvConf"] == "/run/p/resolv.conf"


def test_filter_conversion() -> None:
    flt = pb.PodSandboxFilter(id="abc", state=pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY))
    flt.label_selector["app"] = "web"
    out = conv.sandbox_filter(flt)
    assert (out.id, out.state, dict(out.labels)) == ("abc", NOTREADY, {"app": "web"})
    assert conv.sandbox_filter(pb.PodSandboxFilter()).state is None
