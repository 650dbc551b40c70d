"""Attachment records: serialisation and pod IP / interface accessors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from base.errors import DataLoss
from cni.attachment import Attachment
from cni.netconf import parse_network
from cni.result import parse_result
from cni.runtime_conf import RuntimeConf

NETWORK = parse_network({"cniVersion": "1.0.0", "name": "net1",
                         "plugins": [{"type": "bridge", "bridge": "br0"}]},
                        source="/etc/cni/net.d/10-net1.conflist")


def make(result: dict[str, Any], ifname: str = "eth0") -> Attachment:
    runtime = RuntimeConf(container_id="abc", netns="/run/netns/p", ifname=ifname,
                          args=[("K8S_POD_NAME", "web")],
                          capability_args={"portMappings": [{"hostPort": 1, "containerPort": 2,
                                                             "protocol": "tcp"}]})
    return Attachment(NETWORK, runtime, parse_result(result, NETWORK.cni_version))


DUAL = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "br0", "mac": "00:00:00:00:00:01"},
        {"name": "vethX", "mac": "00:00:00:00:00:02"},
        {"name": "net9", "mac": "00:00:00:00:00:09", "sandbox": "/run/netns/p"},
        {"name": "eth0", "mac": "00:00:00:00:00:03", "sandbox": "/run/netns/p"},
    ],
    "ips": [
        {"address": "10.0.0.1/24", "interface": 0},  # on the host: not a pod IP
        {"address": "fd00::5/64", "interface": 3},
        {"address": "fd00::6/64", "interface": 3},
        {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 3},
        {"address": "10.0.1.5/24", "interface": 2},
        {"address": "10.0.0.5/24", "interface": 3},  # duplicate
    ],
}


def test_pod_ips_ipv4_first_then_ipv6_then_others() -> None:
    attachment = make(DUAL)
    assert attachment.pod_ips() == ["10.0.0.5", "fd00::5", "fd00::6", "10.0.1.5"]


def test_pod_ips_without_interface_index() -> None:
    attachment = make({"cniVersion": "1.0.0", "ips": [{"address": "fd00::7/64"}]})
    assert attachment.pod_ips() == ["fd00::7"]
    legacy = Attachment(NETWORK, make(DUAL).runtime,
                        parse_result({"cniVersion": "0.2.0", "ip4": {"ip": "10.2.0.3/16"},
                                      "ip6": {"ip": "fd01::3/64"}}, "0.2.0"))
    assert legacy.pod_ips() == ["10.2.0.3", "fd01::3"]


def test_container_interface_and_mac() -> None:
    attachment = make(DUAL)
    interface = attachment.container_interface()
    assert interface is not None and interface.name == "eth0"
    assert attachment.mac() == "00:00:00:00:00:03"
    other = make(DUAL, ifname="eth7")  # no interface of that name: first one in the netns
    assert other.mac() == "00:00:00:00:00:09"
    bare = make({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/24"}]})
    assert bare.container_interface() is None and bare.mac() == ""


def test_json_round_trip() -> None:
    attachment = make(DUAL)
    text = attachment.to_json()
    again = Attachment.from_json(text)
    assert again.network.raw == NETWORK.raw
    assert again.network.source == NETWORK.source
    assert again.runtime == attachment.runtime
    assert again.raw_result == DUAL
    assert again.pod_ips() == attachment.pod_ips()
    assert again.key == ("abc", "eth0")
    assert again.network_name == "net1"
    assert json.loads(text)["format"] == "peapod.cni.attachment/v1"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="other"), "unknown format"),
        (lambda d: d.pop("runtime"), "KeyError"),
        (lambda d: d["network"]["config"].pop("plugins"), "missing 'plugins'"),
        (lambda d: d["result"]["ips"].append({"address": "bad"}), "ips[6].address"),
    ],
)
def test_from_json_rejects_damaged_records(mutate: Any, message: str) -> None:
    data = json.loads(make(DUAL).to_json())
    mutate(data)
    with pytest.raises(DataLoss) as info:
        Attachment.from_json(json.dumps(data))
    assert message in info.value.message
    assert info.value.reason == "attachment"


def test_from_json_rejects_non_json() -> None:
    with pytest.raises(DataLoss, match="not valid JSON"):
        Attachment.from_json("{")
    with pytest.raises(DataLoss, match="not a JSON object"):
        Attachment.from_json("[]")
