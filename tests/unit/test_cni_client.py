"""Chain operations against fake plugins: ADD/DEL/CHECK ordering, rollback, STATUS/GC gating."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from base.cancel import CallContext
from base.errors import FailedPrecondition, Internal, NotFound, PeapodError, Unavailable
from cni.attachment import Attachment
from cni.client import CNIClient, add_left_state
from cni.netconf import NetworkConfig, parse_network
from cni.plugin_exec import plugin_failure
from cni.runtime_conf import RuntimeConf, k8s_args

# A fake plugin: logs each call, then behaves as its config's "fake" section says
# (per command: "exit", "stdout", "stderr", "sleep"). ADD by default appends an
# interface named after the plugin to prevResult (or starts a fresh result).
FAKE = r'''
import json, os, sys, time
conf = json.load(sys.stdin)
cmd = os.environ.get("CNI_COMMAND", "")
fake = conf.get("fake", {})
env = {k: v for k, v in os.environ.items() if k.startswith("CNI_")}
if "log" in fake:
    with open(fake["log"], "a") as log:
        log.write(json.dumps({"plugin": fake["id"], "cmd": cmd, "env": env, "conf": conf,
                              "t": time.monotonic()}) + "\n")
step = fake.get(cmd, {})
time.sleep(step.get("sleep", 0))
if "stderr" in step:
    sys.stderr.write(step["stderr"])
if "stdout" in step:
    out = step["stdout"]
    sys.stdout.write(out if isinstance(out, str) else json.dumps(out))
elif cmd == "ADD":
    result = conf.get("prevResult") or {"cniVersion": conf["cniVersion"], "interfaces": [],
                                        "ips": []}
    result["interfaces"].append({"name": fake["id"], "sandbox": env.get("CNI_NETNS", "")})
    if "ip" in fake:
        result["ips"].append({"address": fake["ip"], "interface": len(result["interfaces"]) - 1})
    print(json.dumps(result))
elif cmd == "VERSION":
    print(json.dumps({"cniVersion": conf.get("cniVersion"),
                      "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}))
sys.exit(step.get("exit", 0))
'''


class Fakes:
    """A plugin directory of fake plugins and the log of their invocations."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "bin"
        self.dir.mkdir()
        self.log = tmp_path / "calls.log"
        self.log.touch()
        self.client = CNIClient([str(tmp_path / "empty"), str(self.dir)], plugin_timeout=20)
        for name in ("fake", "fake2"):
            path = self.dir / name
            path.write_text(f"#!{sys.executable}\n{FAKE}")
            path.chmod(0o755)

    def plugin(self, ident: str, kind: str = "fake", **behaviour: Any) -> dict[str, Any]:
        extra = {k: behaviour.pop(k) for k in ("capabilities", "ip") if k in behaviour}
        plugin: dict[str, Any] = {"type": kind, "fake": {"log": str(self.log), "id": ident,
                                                         **behaviour}}
        if "capabilities" in extra:
            plugin["capabilities"] = extra["capabilities"]
        if "ip" in extra:
            plugin["fake"]["ip"] = extra["ip"]
        return plugin

    def network(self, *plugins: dict[str, Any], version: str = "1.0.0",
                **flags: Any) -> NetworkConfig:
        return parse_network({"cniVersion": version, "name": "fakenet", "plugins": list(plugins),
                              **flags}, source="/etc/cni/net.d/10-fakenet.conflist")

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def order(self) -> list[tuple[str, str]]:
        return [(c["plugin"], c["cmd"]) for c in self.calls()]

    def reset(self) -> None:
        self.log.write_text("")


@pytest.fixture
def fakes(tmp_path: Path) -> Fakes:
    return Fakes(tmp_path)


def runtime(**caps: Any) -> RuntimeConf:
    return RuntimeConf(container_id="c1", netns="/proc/self/ns/net", ifname="eth0",
                       args=k8s_args("default", "web", "c1", "uid-1"), capability_args=caps)


def ctx() -> CallContext:
    return CallContext.with_timeout(30)


def test_add_chains_prev_result_and_filters_runtime_config(fakes: Fakes) -> None:
    network = fakes.network(
        fakes.plugin("one", ip="10.0.0.5/24", capabilities={"ips": True}),
        fakes.plugin("two", "fake2", capabilities={"portMappings": True, "bandwidth": False}),
        fakes.plugin("three"),
    )
    maps = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    attachment = fakes.client.add(network, runtime(portMappings=maps, bandwidth={"x": 1},
                                                   ips=["10.0.0.5/24"]), ctx())
    calls = fakes.calls()
    assert [(c["plugin"], c["cmd"]) for c in calls] == [("one", "ADD"), ("two", "ADD"),
                                                        ("three", "ADD")]
    first, second, third = (c["conf"] for c in calls)
    assert "prevResult" not in first
    assert first["runtimeConfig"] == {"ips": ["10.0.0.5/24"]}
    assert second["runtimeConfig"] == {"portMappings": maps}
    assert "runtimeConfig" not in third
    assert all("capabilities" not in c for c in (first, second, third))
    assert [i["name"] for i in second["prevResult"]["interfaces"]] == ["one"]
    assert [i["name"] for i in third["prevResult"]["interfaces"]] == ["one", "two"]
    assert all(c["conf"]["name"] == "fakenet" and c["conf"]["cniVersion"] == "1.0.0"
               for c in calls)
    env = calls[0]["env"]
    assert env["CNI_COMMAND"] == "ADD" and env["CNI_CONTAINERID"] == "c1"
    assert env["CNI_NETNS"] == "/proc/self/ns/net" and env["CNI_IFNAME"] == "eth0"
    assert env["CNI_ARGS"].startswith("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;")
    assert env["CNI_PATH"].endswith(str(fakes.dir))
    assert [i.name for i in attachment.result.interfaces] == ["one", "two", "three"]
    assert attachment.pod_ips() == ["10.0.0.5"]


def test_del_runs_in_reverse_with_final_result(fakes: Fakes) -> None:
    network = fakes.network(fakes.plugin("one"), fakes.plugin("two"))
    attachment = fakes.client.add(network, runtime(), ctx())
    fakes.reset()
    fakes.client.delete(attachment, ctx())
    calls = fakes.calls()
    assert [(c["plugin"], c["cmd"]) for c in calls] == [("two", "DEL"), ("one", "DEL")]
    assert all(c["conf"]["prevResult"] == attachment.raw_result for c in calls)


def test_del_without_recorded_result(fakes: Fakes) -> None:
    network = fakes.network(fakes.plugin("one"), fakes.plugin("two"))
    gone = RuntimeConf(container_id="c1", netns="/run/netns/does-not-exist-peapod")
    fakes.client.delete((network, gone, None), ctx())
    calls = fakes.calls()
    assert [(c["plugin"], c["cmd"]) for c in calls] == [("two", "DEL"), ("one", "DEL")]
    assert all("prevResult" not in c["conf"] for c in calls)
    assert all(c["env"]["CNI_NETNS"] == "" for c in calls)  # missing netns passed as empty


def test_del_before_0_4_0_has_no_prev_result(fakes: Fakes) -> None:
    network = fakes.network(fakes.plugin("one"), version="0.3.1")
    attachment = fakes.client.add(network, runtime(), ctx())
    fakes.reset()
    fakes.client.delete(attachment, ctx())
    assert "prevResult" not in fakes.calls()[0]["conf"]


def test_del_error_halts_and_names_plugin(fakes: Fakes) -> None:
    network = fakes.network(fakes.plugin("one"),
                            fakes.plugin("two", DEL={"exit": 1, "stdout": {"code": 3,
                                                                             "msg": "gone"}}))
    with pytest.raises(NotFound) as info:
        fakes.client.delete((network, runtime(), None), ctx())
    assert "plugin 2 of 2 in network 'fakenet'" in info.value.message
    assert "CNI error code 3" in info.value.message and ": gone" in info.value.message
    assert fakes.order() == [("two", "DEL")]


def test_check_gating(fakes: Fakes) -> None:
    plugins = (fakes.plugin("one"), fakes.plugin("two"))
    attachment = fakes.client.add(fakes.network(*plugins), runtime(), ctx())
    fakes.reset()
    assert fakes.client.check(attachment, ctx()) is True
    calls = fakes.calls()
    assert [(c["plugin"], c["cmd"]) for c in calls] == [("one", "CHECK"), ("two", "CHECK")]
    assert all(c["conf"]["prevResult"] == attachment.raw_result for c in calls)
    fakes.reset()
    for network in (fakes.network(*plugins, version="0.3.1"),
                    fakes.network(*plugins, disableCheck=True)):
        skipped = Attachment(network, attachment.runtime, attachment.result)
        assert fakes.client.check(skipped, ctx()) is False
    assert fakes.calls() == []


def test_check_failure_is_reported(fakes: Fakes) -> None:
    network = fakes.network(fakes.plugin("one", CHECK={"exit": 1, "stdout": {
        "code": 999, "msg": "veth missing", "details": "eth0 not found"}}))
    attachment = fakes.client.add(network, runtime(), ctx())
    with pytest.raises(Internal, match="CHECK failed: CNI error code 999: veth missing; "
                                       "details: eth0 not found"):
        fakes.client.check(attachment, ctx())


def test_add_failure_rolls_back_chain_so_far(fakes: Fakes) -> None:
    network = fakes.network(
        fakes.plugin("one"), fakes.plugin("two"),
        fakes.plugin("three", ADD={"exit": 1, "stderr": "trace\n", "stdout": {
            "code": 7, "msg": "bad config", "details": "field x"}}),
        fakes.plugin("four"),
    )
    with pytest.raises(FailedPrecondition) as info:
        fakes.client.add(network, runtime(), ctx())
    message = info.value.message
    assert "CNI plugin 'fake' (plugin 3 of 4 in network 'fakenet' from " in message
    assert "CNI error code 7 (invalid network config): bad config; details: field x" in message
    assert "plugin stderr: trace" in message
    assert message.endswith("rolled back with DEL of the 3 plugin(s) run")
    failure = plugin_failure(info.value)
    assert failure is not None and failure.code == 7 and failure.details == "field x"
    calls = fakes.calls()
    assert [(c["plugin"], c["cmd"]) for c in calls] == [
        ("one", "ADD"), ("two", "ADD"), ("three", "ADD"),
        ("three", "DEL"), ("two", "DEL"), ("one", "DEL")]
    second_result = calls[2]["conf"]["prevResult"]
    assert [i["name"] for i in second_result["interfaces"]] == ["one", "two"]
    assert all(c["conf"]["prevResult"] == second_result for c in calls[3:])


def test_add_rollback_failure_is_reported_too(fakes: Fakes) -> None:
    network = fakes.network(
        fakes.plugin("one", DEL={"exit": 1, "stdout": {"code": 5, "msg": "io"}}),
        fakes.plugin("two", ADD={"exit": 1, "stdout": {"code": 11, "msg": "busy"}}),
    )
    with pytest.raises(Unavailable) as info:
        fakes.client.add(network, runtime(), ctx())
    assert "CNI error code 11 (try again later): busy" in info.value.message
    assert "rolling back with DEL also failed:" in info.value.message
    assert "CNI error code 5 (I/O failure): io" in info.value.message
    assert info.value.reason == "fake"


def test_add_garbage_result_is_an_error_and_rolls_back(fakes: Fakes) -> None:
    network = fakes.network(fakes.plugin("one", ADD={"stdout": "Hello, world"}))
    with pytest.raises(Internal) as info:
        fakes.client.add(network, runtime(), ctx())
    assert "printed an invalid result: not valid JSON" in info.value.message
    assert "output: Hello, world" in info.value.message
    assert fakes.order() == [("one", "ADD"), ("one", "DEL")]


def test_add_empty_result_is_an_error(fakes: Fakes) -> None:
    network = fakes.network(fakes.plugin("one", ADD={"stdout": ""}))
    with pytest.raises(Internal, match="succeeded but printed no result"):
        fakes.client.add(network, runtime(), ctx())


def test_add_timeout_rolls_back_with_its_own_budget(fakes: Fakes) -> None:
    network = fakes.network(fakes.plugin("one"), fakes.plugin("two", ADD={"sleep": 30}))
    with pytest.raises(Exception, match="killed because the caller's deadline passed"):
        fakes.client.add(network, runtime(), CallContext.with_timeout(1.5))
    assert fakes.order() == [("one", "ADD"), ("two", "ADD"), ("two", "DEL"), ("one", "DEL")]


def test_missing_plugin_fails_before_any_side_effect(fakes: Fakes) -> None:
    network = fakes.network(fakes.plugin("one"), fakes.plugin("x", kind="nosuchplugin"))
    with pytest.raises(FailedPrecondition) as info:
        fakes.client.add(network, runtime(), ctx())
    assert info.value.message == (
        f"CNI plugin 'nosuchplugin' (network 'fakenet') not found in "
        f"{fakes.client.plugin_dirs[0]}, {fakes.dir}")
    assert fakes.calls() == []


def test_invalid_runtime_conf_is_rejected(fakes: Fakes) -> None:
    bad = RuntimeConf(container_id="c1", netns="/x", ifname="this-name-is-too-long")
    with pytest.raises(Exception, match="interface name"):
        fakes.client.add(fakes.network(fakes.plugin("one")), bad, ctx())
    assert fakes.calls() == []


def test_status_gating(fakes: Fakes) -> None:
    plugins = (fakes.plugin("one"), fakes.plugin("two", STATUS={"exit": 1, "stdout": {
        "code": 50, "msg": "daemon down", "details": "no socket"}}))
    fakes.client.status(fakes.network(*plugins, version="1.0.0"), ctx())
    assert fakes.calls() == []
    with pytest.raises(Unavailable) as info:
        fakes.client.status(fakes.network(*plugins, version="1.1.0"), ctx())
    assert "(plugin 2 of 2 in network 'fakenet'" in info.value.message
    assert ("STATUS failed: CNI error code 50 (plugin not available): daemon down; "
            "details: no socket") in info.value.message
    calls = fakes.calls()
    assert [(c["plugin"], c["cmd"]) for c in calls] == [("one", "STATUS"), ("two", "STATUS")]
    assert "CNI_CONTAINERID" not in calls[0]["env"]
    assert "runtimeConfig" not in calls[0]["conf"]
    fakes.reset()
    fakes.client.status(fakes.network(fakes.plugin("one"), version="1.1.0"), ctx())
    assert fakes.order() == [("one", "STATUS")]


def test_status_reports_missing_binary_at_any_version(fakes: Fakes) -> None:
    network = fakes.network(fakes.plugin("x", kind="nosuchplugin"), version="0.4.0")
    with pytest.raises(Unavailable, match=r"'nosuchplugin' .* not found"):
        fakes.client.status(network, ctx())


def test_status_failure_of_any_code_means_unavailable(fakes: Fakes) -> None:
    network = fakes.network(fakes.plugin("one", STATUS={"exit": 1, "stdout": {
        "code": 4, "msg": "unknown CNI_COMMAND: STATUS"}}), version="1.1.0")
    with pytest.raises(Unavailable) as info:
        fakes.client.status(network, ctx())
    assert "CNI error code 4 (invalid environment variables)" in info.value.message
    failure = plugin_failure(info.value)
    assert failure is not None and failure.code == 4


def test_gc_gating_and_valid_attachments(fakes: Fakes) -> None:
    plugins = (fakes.plugin("one"), fakes.plugin("two"))
    old = fakes.network(*plugins, version="1.0.0")
    assert fakes.client.gc(old, [("c1", "eth0")], ctx()) is False
    assert fakes.client.gc(fakes.network(*plugins, version="1.1.0", disableGC=True),
                           [], ctx()) is False
    assert fakes.calls() == []
    network = fakes.network(*plugins, version="1.1.0")
    attachment = fakes.client.add(network, runtime(), ctx())
    other = Attachment(parse_network({"cniVersion": "1.1.0", "name": "othernet",
                                      "plugins": [{"type": "fake"}]}),
                       RuntimeConf(container_id="c9", netns="/x"), attachment.result)
    fakes.reset()
    assert fakes.client.gc(network, [attachment, other, ("c2", "net1")], ctx()) is True
    calls = fakes.calls()
    assert [(c["plugin"], c["cmd"]) for c in calls] == [("one", "GC"), ("two", "GC")]
    expected = [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]
    assert all(c["conf"]["cni.dev/valid-attachments"] == expected for c in calls)
    assert "CNI_CONTAINERID" not in calls[0]["env"]


def test_gc_runs_every_plugin_and_reports_all_errors(fakes: Fakes) -> None:
    failing = {"exit": 1, "stdout": {"code": 999, "msg": "cannot list"}}
    network = fakes.network(fakes.plugin("one", GC=failing), fakes.plugin("two"),
                            fakes.plugin("three", GC=failing), version="1.1.0")
    with pytest.raises(Internal) as info:
        fakes.client.gc(network, [], ctx())
    assert info.value.message.startswith("GC of network 'fakenet' failed in 2 plugins: ")
    assert "plugin 1 of 3" in info.value.message and "plugin 3 of 3" in info.value.message
    assert fakes.order() == [("one", "GC"), ("two", "GC"), ("three", "GC")]


def test_gc_waits_for_attachment_operations(fakes: Fakes) -> None:
    network = fakes.network(fakes.plugin("one", ADD={"sleep": 0.8}), version="1.1.0")
    adder = threading.Thread(target=fakes.client.add, args=(network, runtime(), ctx()))
    adder.start()
    try:
        deadline = time.monotonic() + 10
        while not fakes.calls() and time.monotonic() < deadline:
            time.sleep(0.02)  # wait until the ADD is running
        fakes.client.gc(network, [], ctx())
    finally:
        adder.join()
    calls = fakes.calls()
    assert [c["cmd"] for c in calls] == ["ADD", "GC"]
    assert calls[1]["t"] - calls[0]["t"] >= 0.7  # GC started only after ADD finished


def test_version_query(fakes: Fakes) -> None:
    info = fakes.client.version("fake", ctx())
    assert info.supported_versions == ["0.4.0", "1.0.0", "1.1.0"]
    assert info.cni_version == "1.1.0"


def test_restored_attachment_deletes_with_recorded_config(fakes: Fakes) -> None:
    network = fakes.network(fakes.plugin("one"), fakes.plugin("two"))
    stored = fakes.client.add(network, runtime(), ctx()).to_json()
    fakes.reset()
    restored = Attachment.from_json(stored)
    fakes.client.delete(restored, ctx())
    assert fakes.order() == [("two", "DEL"), ("one", "DEL")]
    assert fakes.calls()[0]["conf"]["prevResult"] == json.loads(stored)["result"]


def test_add_left_state_tells_a_failed_rollback_from_a_clean_one(fakes: Fakes) -> None:
    clean = fakes.network(fakes.plugin("one"),
                          fakes.plugin("two", ADD={"exit": 1, "stdout": {"code": 11}}))
    with pytest.raises(Unavailable) as info:
        fakes.client.add(clean, runtime(), ctx())
    assert not add_left_state(info.value)
    dirty = fakes.network(fakes.plugin("one", DEL={"exit": 1, "stdout": {"code": 5}}),
                          fakes.plugin("two", ADD={"exit": 1, "stdout": {"code": 11}}))
    with pytest.raises(Unavailable) as info:
        fakes.client.add(dirty, runtime(), ctx())
    assert add_left_state(info.value)
    wrapped = Internal("outer")
    wrapped.__cause__ = info.value
    assert add_left_state(wrapped)


class _Timings:
    def __init__(self) -> None:
        self.runs: list[tuple[str, str, float]] = []

    def plugin_ran(self, plugin: str, command: str, seconds: float) -> None:
        self.runs.append((plugin, command, seconds))


def test_the_observer_times_every_plugin_run_failed_ones_and_rollbacks_too(fakes: Fakes) -> None:
    timings = _Timings()
    client = CNIClient([str(fakes.dir)], plugin_timeout=20, observer=timings)
    network = fakes.network(fakes.plugin("one"), fakes.plugin("two", "fake2", ADD={"exit": 1}))
    with pytest.raises(PeapodError):
        client.add(network, runtime(), ctx())
    assert [(p, c) for p, c, _ in timings.runs] == [
        ("fake", "ADD"), ("fake2", "ADD"), ("fake2", "DEL"), ("fake", "DEL")]
    assert all(0 < s < 20 for _, _, s in timings.runs)
    attachment = client.add(fakes.network(fakes.plugin("one")), runtime(), ctx())
    client.check(attachment, ctx())
    client.delete(attachment, ctx())
    assert [c for _, c, _ in timings.runs[4:]] == ["ADD", "CHECK", "DEL"]
