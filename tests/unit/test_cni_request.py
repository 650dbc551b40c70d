"""Per-invocation config and environment: runtimeConfig filtering, CNI_ARGS, GC keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from base.errors import InvalidArgument
from cni.capabilities import PortMapping, bandwidth, port_mappings, runtime_config_for
from cni.netconf import parse_network
from cni.request import plugin_env, request_config
from cni.runtime_conf import RuntimeConf, k8s_args

NETWORK = parse_network({
    "cniVersion": "1.1.0",
    "name": "net1",
    "plugins": [
        {"type": "bridge", "name": "ignored", "cniVersion": "0.1.0", "bridge": "br0",
         "capabilities": {"ips": True, "mac": False}},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        {"type": "bandwidth", "capabilities": {"bandwidth": True},
         "runtimeConfig": {"stale": 1}, "cni.dev/valid-attachments": ["stale"]},
    ],
})
CAPS = {
    "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
    "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000},
    "mac": "c2:11:22:33:44:55",
    "ips": ["10.0.0.9/24"],
    "cgroupPath": "/kubepods/pod1",
}
RUNTIME = RuntimeConf(container_id="abc", netns="/run/netns/x", ifname="eth0",
                      args=k8s_args("default", "web", "abc", "uid-1"), capability_args=CAPS)


def test_runtime_config_only_declared_capabilities() -> None:
    assert runtime_config_for(NETWORK.plugins[0], CAPS) == {"ips": ["10.0.0.9/24"]}
    assert runtime_config_for(NETWORK.plugins[1], CAPS) == {"portMappings":
                                                            CAPS["portMappings"]}
    assert runtime_config_for({"type": "x"}, CAPS) == {}


def test_add_config_injects_name_version_runtime_config_prev_result() -> None:
    prev = {"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24"}]}
    conf = request_config(NETWORK, NETWORK.plugins[1], "ADD", RUNTIME, prev)
    assert conf == {
        "type": "portmap", "snat": True, "name": "net1", "cniVersion": "1.1.0",
        "runtimeConfig": {"portMappings": CAPS["portMappings"]}, "prevResult": prev,
    }
    first = request_config(NETWORK, NETWORK.plugins[0], "ADD", RUNTIME, None)
    assert first["name"] == "net1" and first["cniVersion"] == "1.1.0"
    assert "prevResult" not in first and "capabilities" not in first
    assert first["runtimeConfig"] == {"ips": ["10.0.0.9/24"]}


def test_stale_reserved_keys_are_replaced() -> None:
    conf = request_config(NETWORK, NETWORK.plugins[2], "DEL", RUNTIME, None)
    assert conf["runtimeConfig"] == {"bandwidth": CAPS["bandwidth"]}
    assert "cni.dev/valid-attachments" not in conf
    no_caps = RuntimeConf(container_id="abc", netns="/x")
    conf = request_config(NETWORK, NETWORK.plugins[1], "ADD", no_caps, None)
    assert "runtimeConfig" not in conf


def test_request_config_does_not_alias_network() -> None:
    prev = {"ips": [{"address": "10.0.0.2/24"}]}
    conf = request_config(NETWORK, NETWORK.plugins[1], "ADD", RUNTIME, prev)
    conf["runtimeConfig"]["portMappings"].append("x")
    conf["prevResult"]["ips"].clear()
    assert len(CAPS["portMappings"]) == 1 and prev["ips"]
    assert "runtimeConfig" not in NETWORK.plugins[1]


def test_gc_and_status_configs() -> None:
    gc = request_config(NETWORK, NETWORK.plugins[0], "GC",
                        valid_attachments=[("c1", "eth0"), ("c2", "net1")])
    expected = [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]
    assert gc["cni.dev/valid-attachments"] == expected
    assert gc["cni.dev/attachments"] == expected
    assert "runtimeConfig" not in gc
    status = request_config(NETWORK, NETWORK.plugins[1], "STATUS")
    assert status["name"] == "net1" and status["cniVersion"] == "1.1.0"
    assert "cni.dev/valid-attachments" not in status and "prevResult" not in status


def test_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CNI_IFNAME", "leaked")
    monkeypatch.setenv("CNI_EXTRA", "leaked")
    netns = tmp_path / "ns"
    netns.touch()
    runtime = RuntimeConf(container_id="abc", netns=str(netns), ifname="eth1",
                          args=k8s_args("default", "web", "abc", "uid-1"))
    env = plugin_env("ADD", ["/a", "/b"], runtime)
    assert env["CNI_COMMAND"] == "ADD"
    assert env["CNI_CONTAINERID"] == "abc"
    assert env["CNI_NETNS"] == str(netns)
    assert env["CNI_IFNAME"] == "eth1"
    assert env["CNI_PATH"] == "/a:/b"
    assert env["CNI_ARGS"] == ("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
                               "K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=uid-1")
    assert "CNI_EXTRA" not in env and "PATH" in env
    netns.unlink()
    assert plugin_env("DEL", ["/a"], runtime)["CNI_NETNS"] == ""
    assert plugin_env("CHECK", ["/a"], runtime)["CNI_NETNS"] == str(netns)
    status = plugin_env("STATUS", ["/a"])
    assert status["CNI_COMMAND"] == "STATUS"
    assert "CNI_CONTAINERID" not in status and "CNI_IFNAME" not in status


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"container_id": ""}, "container id"),
        ({"container_id": "-abc"}, "container id"),
        ({"container_id": "a b"}, "container id"),
        ({"ifname": ""}, "interface name"),
        ({"ifname": "a" * 16}, "interface name"),
        ({"ifname": "a/b"}, "interface name"),
        ({"ifname": "a:b"}, "interface name"),
        ({"ifname": "a b"}, "interface name"),
        ({"ifname": ".."}, "interface name"),
        ({"args": [("K", "a;b")]}, "CNI_ARGS pair"),
        ({"args": [("K=", "v")]}, "CNI_ARGS pair"),
        ({"args": [("", "v")]}, "CNI_ARGS pair"),
    ],
)
def test_runtime_conf_validation(kwargs: dict[str, object], message: str) -> None:
    params: dict[str, object] = {"container_id": "abc", "netns": "/x"}
    params.update(kwargs)
    with pytest.raises(InvalidArgument, match=message):
        RuntimeConf(**params).validate()  # type: ignore[arg-type]


def test_runtime_conf_round_trip() -> None:
    again = RuntimeConf.from_dict(RUNTIME.to_dict())
    assert again == RUNTIME


def test_port_mappings_and_bandwidth() -> None:
    entries = port_mappings([
        PortMapping(8080, 80, "TCP"),
        PortMapping(0, 81),  # no host port: not forwarded
        PortMapping(5353, 53, "udp", host_ip="127.0.0.1"),
    ])
    assert entries == [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
    ]
    with pytest.raises(InvalidArgument, match="protocol 'icmp'"):
        port_mappings([PortMapping(1, 1, "icmp")])
    with pytest.raises(InvalidArgument, match="outside 1-65535"):
        port_mappings([PortMapping(70000, 1)])
    assert bandwidth(ingress_rate=1000) == {"ingressRate": 1000, "ingressBurst": 2**31 - 1}
    assert bandwidth(egress_rate=5, egress_burst=7) == {"egressRate": 5, "egressBurst": 7}
    assert bandwidth() == {}
