"""Result parsing for every spec version, and VERSION answers."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from cni.result import ResultInvalid, parse_result, parse_version_info
from cni.version import at_least, select_version


def test_legacy_0_2_0_result() -> None:
    doc = {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1",
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.254"}]},
        "ip6": {"ip": "fd00::5/64"},
        "dns": {"nameservers": ["10.1.0.1"], "domain": "example"},
    }
    result = parse_result(json.dumps(doc), "0.2.0")
    assert [str(ip.address) for ip in result.ips] == ["10.1.0.5/16", "fd00::5/64"]
    assert result.ips[0].gateway == ipaddress.ip_address("10.1.0.1")
    assert result.ips[0].interface is None
    assert [str(r.dst) for r in result.routes] == ["0.0.0.0/0", "192.168.0.0/16"]
    assert result.routes[1].gw == ipaddress.ip_address("10.1.0.254")
    assert result.interfaces == []
    assert result.dns.nameservers == ["10.1.0.1"] and result.dns.domain == "example"
    assert result.raw == doc


def test_legacy_family_mismatch() -> None:
    with pytest.raises(ResultInvalid, match=r"ip4\.ip 'fd00::5/64' is not an IPv4 address"):
        parse_result({"cniVersion": "0.1.0", "ip4": {"ip": "fd00::5/64"}}, "0.1.0")


def _current(version: str, with_family: bool) -> dict[str, Any]:
    ips: list[dict[str, Any]] = [
        {"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2},
        {"address": "fd00::5/64", "interface": 2},
    ]
    if with_family:
        ips[0]["version"] = "4"
        ips[1]["version"] = "6"
    return {
        "cniVersion": version,
        "interfaces": [
            {"name": "cni0", "mac": "00:11:22:33:44:55"},
            {"name": "veth1", "mac": "55:44:33:22:11:11"},
            {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/run/netns/x"},
        ],
        "ips": ips,
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.1.0.1"], "search": ["a.b"], "options": ["ndots:5"]},
    }


@pytest.mark.parametrize(("version", "with_family"),
                         [("0.3.0", True), ("0.3.1", True), ("0.4.0", True), ("1.0.0", False),
                          ("1.1.0", False)])
def test_current_results(version: str, with_family: bool) -> None:
    result = parse_result(_current(version, with_family), "1.0.0")
    assert result.cni_version == version
    assert [i.name for i in result.interfaces] == ["cni0", "veth1", "eth0"]
    assert result.interfaces[2].sandbox == "/run/netns/x"
    assert [(str(ip.address), ip.interface, ip.version) for ip in result.ips] == [
        ("10.1.0.5/16", 2, 4), ("fd00::5/64", 2, 6)]
    assert result.routes[0].dst == ipaddress.ip_network("0.0.0.0/0")
    assert result.dns.search == ["a.b"] and result.dns.options == ["ndots:5"]


def test_1_1_0_optional_fields() -> None:
    doc = {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mtu": 1400, "sandbox": "/x", "socketPath": "/s",
                        "pciID": "0000:04:00.5"}],
        "ips": [{"address": "10.0.0.2/24"}],
        "routes": [{"dst": "10.9.0.0/16", "gw": "10.0.0.1", "mtu": 1300, "advmss": 1200,
                    "priority": 5, "table": 100, "scope": 253}],
    }
    result = parse_result(doc, "1.1.0")
    iface = result.interfaces[0]
    assert (iface.mtu, iface.socket_path, iface.pci_id) == (1400, "/s", "0000:04:00.5")
    route = result.routes[0]
    assert (route.mtu, route.advmss, route.priority, route.table, route.scope) == (
        1300, 1200, 5, 100, 253)
    assert result.ips[0].interface is None


def test_missing_version_uses_config_version() -> None:
    legacy = parse_result({"ip4": {"ip": "10.0.0.2/24"}}, "0.2.0")
    assert legacy.cni_version == "0.2.0" and str(legacy.ips[0].address) == "10.0.0.2/24"
    current = parse_result({"ips": [{"address": "10.0.0.2/24"}]}, "1.0.0")
    assert current.cni_version == "1.0.0" and len(current.ips) == 1


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("not json", "not valid JSON"),
        ("[1]", "not a JSON object"),
        ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2"}]},
         "ips[0].address '10.0.0.2' is not in CIDR notation"),
        ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/24"}]},
         "is not an IP address in CIDR notation"),
        ({"cniVersion": "0.4.0", "ips": [{"version": "6", "address": "10.0.0.2/24"}]},
         "ips[0].version '6' does not match"),
        ({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}],
          "ips": [{"address": "10.0.0.2/24", "interface": 1}]},
         "ips[0].interface 1 is out of range (1 interfaces listed)"),
        ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24", "interface": -1}]},
         "must be a non-negative integer"),
        ({"cniVersion": "1.0.0", "interfaces": {"name": "eth0"}}, "interfaces must be a list"),
        ({"cniVersion": "1.0.0", "interfaces": [{"name": 3}]}, "interfaces[0].name must be"),
        ({"cniVersion": "1.0.0", "routes": [{"dst": "nowhere"}]}, "routes[0].dst 'nowhere'"),
        ({"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "gw": "x"}]},
         "routes[0].gw 'x' is not an IP address"),
        ({"cniVersion": "1.0.0", "dns": {"nameservers": "1.1.1.1"}},
         "dns.nameservers must be a list of strings"),
    ],
)
def test_invalid_results(doc: Any, message: str) -> None:
    data = doc if isinstance(doc, str) else json.dumps(doc)
    with pytest.raises(ResultInvalid) as info:
        parse_result(data, "1.0.0")
    assert message in str(info.value)


def test_version_info() -> None:
    info = parse_version_info(
        '{"cniVersion":"1.0.0","supportedVersions":["0.1.0","0.4.0","1.0.0"]}')
    assert info.cni_version == "1.0.0"
    assert info.supported_versions == ["0.1.0", "0.4.0", "1.0.0"]
    with pytest.raises(ResultInvalid, match="supportedVersions"):
        parse_version_info('{"cniVersion":"1.0.0"}')


def test_version_helpers() -> None:
    assert at_least("1.1.0", "1.1.0") and at_least("1.10.0", "1.9.0")
    assert not at_least("0.4.0", "1.0.0") and not at_least("junk", "0.1.0")
    assert select_version("0.3.1", ["1.1.0", "1.0.0"]) == "1.1.0"
    with pytest.raises(ValueError, match="peapod supports"):
        select_version("3.0.0")
