"""One plugin's handshake and calls, against a fake plugin over a socket pair; the gate; sync."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from api import nri_pb2
from nri import events
from nri.connection import Connection
from nri.gate import SyncGate
from nri.mux import PLUGIN_CONN, RUNTIME_CONN
from nri.plugin import PLUGIN_SERVICE, RUNTIME_SERVICE, Plugin, PluginGone, PluginRefused
from nri.settings import NRISettings
from nri.sync import parts, synchronize
from nri.ttrpc import UNIMPLEMENTED, CallFailed, ConnectionClosed

SETTINGS = NRISettings(registration_timeout=1.0, request_timeout=0.5)


class Host:
    def __init__(self) -> None:
        self.closed: list[tuple[str, str]] = []

    def update_containers(self, plugin: Plugin, req: Any) -> Any:
        return nri_pb2.UpdateContainersResponse()

    def plugin_closed(self, plugin: Plugin, reason: str) -> None:
        self.closed.append((plugin.name, reason))


class FakePlugin:
    """The plugin's end: serves the Plugin service with ``handlers`` (method -> function)."""

    def __init__(self, sock: socket.socket, handlers: dict[str, Callable[[bytes], bytes]]):
        table = {(PLUGIN_SERVICE, m): h for m, h in handlers.items()}
        self.conn = Connection(sock, RUNTIME_CONN, PLUGIN_CONN, table, lambda reason: None)
        self.conn.start()

    def register(self, name: str = "fake", idx: str = "10") -> None:
        req = nri_pb2.RegisterPluginRequest(plugin_name=name, plugin_idx=idx)
        with contextlib.suppress(CallFailed, ConnectionClosed):  # refused: the test checks why
            self.conn.client.call(RUNTIME_SERVICE, "RegisterPlugin", req.SerializeToString(), 2)


def configure(mask: int) -> Callable[[bytes], bytes]:
    return lambda _p: nri_pb2.ConfigureResponse(events=mask).SerializeToString()


def pair(handlers: dict[str, Callable[[bytes], bytes]]) -> tuple[Plugin, FakePlugin, Host]:
    ours, theirs = socket.socketpair()
    host = Host()
    return Plugin(ours, host), FakePlugin(theirs, handlers), host


def test_handshake_registers_configures_and_subscribes() -> None:
    mask = events.bit(events.CREATE) | events.bit(events.START)
    plugin, fake, host = pair({"Configure": configure(mask)})
    threading.Timer(0.1, fake.register).start()
    plugin.handshake(SETTINGS)
    assert plugin.name == "10-fake" and plugin.kind == "external"
    assert plugin.subscribed(events.CREATE) and not plugin.subscribed(events.RUN_POD)
    plugin.close("done")
    assert host.closed == [("10-fake", "done")]


def test_no_subscription_means_every_event() -> None:
    plugin, fake, _ = pair({"Configure": configure(0)})
    threading.Timer(0.1, fake.register).start()
    plugin.handshake(SETTINGS)
    assert plugin.events == events.ALL
    plugin.close("done")


@pytest.mark.parametrize(("register", "configure_with", "words"), [
    (None, configure(0), "did not register within 1 s"),
    (("bad name", "10"), configure(0), "invalid name"),
    (("ok", "1"), configure(0), "index '1' is not two digits"),
    (("ok", "10"), configure(1 << 20), "subscribed to unknown events"),
])
def test_failed_handshakes_close_the_plugin(register: tuple[str, str] | None,
                                            configure_with: Any, words: str) -> None:
    plugin, fake, host = pair({"Configure": configure_with})
    if register is not None:
        threading.Timer(0.1, fake.register, args=register).start()
    with pytest.raises(PluginGone):
        plugin.handshake(SETTINGS)
    assert len(host.closed) == 1 and words in host.closed[0][1]


def test_timeout_closes_and_refusal_does_not() -> None:
    def slow(_p: bytes) -> bytes:
        time.sleep(2)
        return b""

    def refuse(_p: bytes) -> bytes:
        raise CallFailed(2, "no")

    plugin, fake, host = pair({"Configure": configure(0), "RunPodSandbox": refuse,
                               "StopPodSandbox": slow})
    threading.Timer(0.1, fake.register).start()
    plugin.handshake(SETTINGS)
    pod = nri_pb2.PodSandbox(id="p")
    with pytest.raises(PluginRefused, match="no"):
        plugin.event(events.RUN_POD, nri_pb2.RunPodSandboxRequest(pod=pod),
                     nri_pb2.RunPodSandboxResponse, 0.5, pod)
    assert not plugin.closed
    with pytest.raises(PluginGone, match=r"did not answer StopPodSandbox within 0\.5 s"):
        plugin.event(events.STOP_POD, nri_pb2.StopPodSandboxRequest(pod=pod),
                     nri_pb2.StopPodSandboxResponse, 0.5, pod)
    assert plugin.closed and "did not answer" in host.closed[0][1]


def test_events_a_plugin_lacks_go_to_state_change() -> None:
    seen: list[int] = []

    def unimplemented(_p: bytes) -> bytes:
        raise CallFailed(UNIMPLEMENTED, "no such method")

    def state_change(payload: bytes) -> bytes:
        seen.append(nri_pb2.StateChangeEvent.FromString(payload).event)
        return nri_pb2.Empty().SerializeToString()

    plugin, fake, _ = pair({"Configure": configure(0), "PostStartContainer": unimplemented,
                            "StateChange": state_change, "CreateContainer": unimplemented})
    threading.Timer(0.1, fake.register).start()
    plugin.handshake(SETTINGS)
    pod, ctr = nri_pb2.PodSandbox(id="p"), nri_pb2.Container(id="c")
    plugin.event(events.POST_START, nri_pb2.PostStartContainerRequest(pod=pod, container=ctr),
                 nri_pb2.PostStartContainerResponse, 0.5, pod, ctr)
    assert seen == [events.POST_START]
    with pytest.raises(PluginRefused):  # CreateContainer answers: no fallback for it
        plugin.event(events.CREATE, nri_pb2.CreateContainerRequest(pod=pod, container=ctr),
                     nri_pb2.CreateContainerResponse, 0.5, pod, ctr)
    plugin.close("done")


def test_gate_snapshot_waits_for_admissions_and_holds_new_ones_back() -> None:
    gate = SyncGate()
    order: list[str] = []
    admitted = threading.Event()
    release = threading.Event()

    def creation(name: str, hold: threading.Event | None) -> None:
        with gate.admission():
            order.append(f"{name} in")
            admitted.set()
            if hold is not None:
                hold.wait(5)
            order.append(f"{name} out")

    first = threading.Thread(target=creation, args=("a", release))
    first.start()
    assert admitted.wait(5)

    def snapshot() -> None:
        with gate.snapshot():
            order.append("snapshot")

    snap = threading.Thread(target=snapshot)
    snap.start()
    time.sleep(0.1)
    second = threading.Thread(target=creation, args=("b", None))
    second.start()
    time.sleep(0.1)
    assert order == ["a in"]  # the snapshot waits for a; b waits behind the snapshot
    release.set()
    for t in (first, snap, second):
        t.join(5)
    assert order == ["a in", "a out", "snapshot", "b in", "b out"]


def test_sync_parts_stay_under_the_limit_and_flag_more() -> None:
    pods = [nri_pb2.PodSandbox(id=f"p{i}", name="x" * 200) for i in range(30)]
    ctrs = [nri_pb2.Container(id=f"c{i}", args=["y" * 300]) for i in range(30)]
    out = parts(pods, ctrs, limit=2000)
    assert len(out) > 5
    assert all(r.more for r in out[:-1]) and not out[-1].more
    assert all(r.ByteSize() <= 2000 + 100 for r in out)
    assert [p.id for r in out for p in r.pods] == [p.id for p in pods]
    assert [c.id for r in out for c in r.containers] == [c.id for c in ctrs]
    assert len(parts(pods[:2], ctrs[:2])) == 1


def test_a_plugin_must_take_sync_in_parts() -> None:
    calls: list[bool] = []

    def answer(payload: bytes) -> bytes:
        req = nri_pb2.SynchronizeRequest.FromString(payload)
        calls.append(req.more)
        resp = nri_pb2.SynchronizeResponse(more=req.more)
        if not req.more:
            resp.update.add(container_id="c1")
        return resp.SerializeToString()

    plugin, fake, _ = pair({"Configure": configure(0), "Synchronize": answer})
    threading.Timer(0.1, fake.register).start()
    plugin.handshake(SETTINGS)
    pods = [nri_pb2.PodSandbox(id=f"p{i}", name="x" * 500) for i in range(10)]
    updates = synchronize(plugin, pods, [], 1.0, limit=1200)
    assert calls[-1] is False and all(calls[:-1]) and len(calls) > 2
    assert [u.container_id for u in updates] == ["c1"]
    plugin.close("done")

    def wrong(payload: bytes) -> bytes:
        return nri_pb2.SynchronizeResponse(more=False).SerializeToString()

    plugin, fake, _ = pair({"Configure": configure(0), "Synchronize": wrong})
    threading.Timer(0.1, fake.register).start()
    plugin.handshake(SETTINGS)
    with pytest.raises(PluginRefused, match="in parts"):
        synchronize(plugin, pods, [], 1.0, limit=1200)
    plugin.close("done")
