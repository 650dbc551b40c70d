"""Network config loading, validation, ordering and selection."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from base.errors import FailedPrecondition, InvalidArgument, NotFound
from cni.netconf import NetworkConfig, load_network_dir, loopback_network, parse_network

REPO = Path(__file__).resolve().parents[2]


def conflist(name: str, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"cniVersion": version, "name": name,
                           "plugins": [{"type": "bridge"}, {"type": "portmap"}]}
    doc.update(extra)
    return doc


def write(directory: Path, filename: str, doc: Any) -> Path:
    path = directory / filename
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_loads_all_extensions_in_lexical_order(tmp_path: Path) -> None:
    write(tmp_path, "30-c.json", conflist("c"))
    write(tmp_path, "10-a.conflist", conflist("a"))
    write(tmp_path, "20-b.conf", {"cniVersion": "0.4.0", "name": "b", "type": "ptp"})
    write(tmp_path, "05-ignored.txt", conflist("ignored"))
    (tmp_path / "00-dir.conflist").mkdir()
    scan = load_network_dir(str(tmp_path))
    assert [n.name for n in scan.networks] == ["a", "b", "c"]
    assert scan.skipped == []
    assert scan.pick().name == "a"
    assert scan.networks[0].source == str(tmp_path / "10-a.conflist")


def test_single_plugin_conf_is_wrapped_into_a_list(tmp_path: Path) -> None:
    write(tmp_path, "10-b.conf", {"cniVersion": "0.3.1", "name": "b", "type": "ptp",
                                  "ipam": {"type": "host-local"}, "disableCheck": True})
    network = load_network_dir(str(tmp_path)).pick("b")
    assert network.plugin_types() == ["ptp"]
    assert network.plugins[0]["ipam"] == {"type": "host-local"}
    assert network.raw["plugins"][0]["type"] == "ptp"
    assert network.cni_version == "0.3.1"
    assert network.disable_check is True


def test_json_file_with_plugins_is_a_list(tmp_path: Path) -> None:
    write(tmp_path, "10-a.json", conflist("a"))
    assert load_network_dir(str(tmp_path)).pick().plugin_types() == ["bridge", "portmap"]


def test_invalid_file_is_skipped_with_reason(tmp_path: Path) -> None:
    bad = conflist("x")
    bad["plugins"][1] = {"snat": True}
    write(tmp_path, "10-x.conflist", bad)
    write(tmp_path, "20-ok.conflist", conflist("ok"))
    scan = load_network_dir(str(tmp_path))
    assert [n.name for n in scan.networks] == ["ok"]
    assert scan.problems() == "10-x.conflist: missing 'type' in plugin 2"


def test_no_valid_network_names_dir_and_reasons(tmp_path: Path) -> None:
    bad = conflist("x")
    bad["plugins"][1] = {}
    write(tmp_path, "10-x.conflist", bad)
    write(tmp_path, "20-y.conf", "{not json")
    with pytest.raises(FailedPrecondition) as info:
        load_network_dir(str(tmp_path)).pick()
    message = info.value.message
    assert message.startswith(f"no valid network config in {tmp_path}: ")
    assert "10-x.conflist: missing 'type' in plugin 2" in message
    assert "20-y.conf: not valid JSON" in message
    assert info.value.reason == "netconf"


def test_empty_and_missing_directories(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match=r"no \.conflist, \.conf or \.json files"):
        load_network_dir(str(tmp_path)).pick()
    missing = tmp_path / "nope"
    with pytest.raises(FailedPrecondition, match="directory does not exist"):
        load_network_dir(str(missing)).pick()


def test_pick_by_name(tmp_path: Path) -> None:
    write(tmp_path, "10-a.conflist", conflist("a"))
    write(tmp_path, "20-b.conflist", conflist("b"))
    write(tmp_path, "30-bad.conflist", {"name": "bad"})
    scan = load_network_dir(str(tmp_path))
    assert scan.pick("b").name == "b"
    with pytest.raises(NotFound) as info:
        scan.pick("zzz")
    assert "network 'zzz' not found in" in info.value.message
    assert "'a' (10-a.conflist)" in info.value.message
    assert "skipped: 30-bad.conflist: missing 'plugins'" in info.value.message


def test_duplicate_name_keeps_first(tmp_path: Path) -> None:
    write(tmp_path, "10-a.conflist", conflist("same", "0.4.0"))
    write(tmp_path, "20-a.conflist", conflist("same", "1.0.0"))
    scan = load_network_dir(str(tmp_path))
    assert len(scan.networks) == 1
    assert scan.pick("same").cni_version == "0.4.0"
    assert "already defined in 10-a.conflist" in scan.problems()


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0",
                                     "1.1.0"])
def test_accepted_versions(version: str) -> None:
    network = parse_network(conflist("n", version))
    assert network.cni_version == version


def test_cni_versions_selects_highest_supported() -> None:
    network = parse_network(conflist("n", "0.4.0", cniVersions=["1.0.0", "9.9.9", "0.3.1"]))
    assert network.cni_version == "1.0.0"
    assert network.supports("0.4.0") and not network.supports("1.1.0")


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ([], "the top level is not a JSON object"),
        ({"cniVersion": "1.0.0", "plugins": [{"type": "a"}]}, "missing 'name'"),
        (conflist("bad name"), "invalid network name 'bad name'"),
        (conflist("-x"), "invalid network name '-x'"),
        ({"name": "n", "plugins": [{"type": "a"}]}, "missing 'cniVersion'"),
        (conflist("n", "2.0.0"), "unsupported cniVersion '2.0.0'"),
        (conflist("n", 1), "'cniVersion' must be a string"),  # type: ignore[arg-type]
        ({"cniVersion": "1.0.0", "name": "n", "plugins": []}, "'plugins' must be a non-empty"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [3]}, "plugin 1 is not a JSON object"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../x"}]},
         "'type' '../x' of plugin 1 must be a plain file name"),
        ({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": 5}]},
         "'type' of plugin 1 must be a string"),
        ({"cniVersion": "1.0.0", "name": "n",
          "plugins": [{"type": "p", "capabilities": ["portMappings"]}]},
         "'capabilities' of plugin 1 (p) must be an object"),
        (conflist("n", disableCheck="maybe"), "'disableCheck' must be true or false"),
        (conflist("n", cniVersions="1.0.0"), "'cniVersions' must be a list of strings"),
    ],
)
def test_validation_reasons(doc: Any, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_network(doc)
    assert reason in info.value.message


def test_conflist_file_needs_plugins(tmp_path: Path) -> None:
    write(tmp_path, "10-a.conflist", {"cniVersion": "1.0.0", "name": "a", "type": "bridge"})
    assert "missing 'plugins'" in load_network_dir(str(tmp_path)).problems()


def test_flags_accept_strings() -> None:
    network = parse_network(conflist("n", "1.1.0", disableCheck="true", disableGC="False"))
    assert network.disable_check is True
    assert network.disable_gc is False


def test_round_trip_keeps_exact_document() -> None:
    doc = conflist("n", "1.1.0", disableGC=True)
    doc["plugins"][0]["custom"] = {"deep": [1, 2]}
    network = parse_network(doc, source="/etc/cni/net.d/10-n.conflist")
    again = NetworkConfig.from_dict(json.loads(json.dumps(network.to_dict())))
    assert again.raw == doc
    assert again.source == "/etc/cni/net.d/10-n.conflist"
    assert again.disable_gc is True
    doc["plugins"][0]["custom"]["deep"].append(3)  # no aliasing into the parsed config
    assert network.plugins[0]["custom"] == {"deep": [1, 2]}


def test_loopback_network() -> None:
    network = loopback_network()
    assert network.plugin_types() == ["loopback"]
    assert network.name == "peapod-loopback"


def test_deploy_default_network() -> None:
    path = REPO / "deploy" / "cni" / "10-peapod.conflist"
    scan = load_network_dir(os.path.dirname(path))
    network = scan.pick("peapod")
    assert scan.skipped == []
    assert network.cni_version == "1.0.0"
    assert network.plugin_types() == ["bridge", "portmap"]
    bridge, portmap = network.plugins
    assert bridge["bridge"] == "peapod0"
    assert bridge["isGateway"] and bridge["ipMasq"] and bridge["hairpinMode"]
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.85.0.0/16"}]]
    assert {"dst": "0.0.0.0/0"} in bridge["ipam"]["routes"]
    assert portmap["capabilities"] == {"portMappings": True}
    assert portmap["snat"] is True
