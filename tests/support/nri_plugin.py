#!/usr/bin/env python3
"""A small NRI plugin for the tests, speaking the protocol on its own (not through nri/).

It frames, multiplexes and answers ttrpc independently of peapod's implementation,
so the two check each other. Run it with ``--socket PATH`` to connect to a runtime's
NRI socket, or start it from a plugin directory (it then finds its socket, name and
index in NRI_PLUGIN_SOCKET, NRI_PLUGIN_NAME and NRI_PLUGIN_IDX, and its settings in
Configure's config).

Settings (JSON, from ``--config`` or Configure): ``events`` (method names; default
all), ``env`` ({name: value} to inject), ``mounts`` (NRI mounts to inject),
``cpuset`` (CPUs to pin to), ``annotations``, ``log`` (a file that gets one JSON line
per call), ``control`` (a directory of marker files read at each call:
``fail-<Method>`` answers with an error (the file's text), ``sleep-<Method>`` sleeps
that many seconds first, ``crash-<Method>`` exits the process without answering),
``update_on_create`` (ask, in CreateContainer, for a cpuset update of the container
with that id: ``update_cpuset``), ``evict_on_create`` (evict that container),
``update_after_sync`` and ``evict_after_sync`` (the same, unasked, with UpdateContainers
once synchronized; the answer is logged) and ``adjust`` (any ContainerAdjustment, as
protobuf JSON, merged into the answer).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from google.protobuf import json_format

from api import nri_pb2, ttrpc_pb2

PKG = "nri.pkg.api.v1alpha1"
FRAME = struct.Struct(">II")
MSG = struct.Struct(">IIBB")
EVENTS = ["RunPodSandbox", "StopPodSandbox", "RemovePodSandbox", "CreateContainer",
          "PostCreateContainer", "StartContainer", "PostStartContainer", "UpdateContainer",
          "PostUpdateContainer", "StopContainer", "RemoveContainer"]
EVENT_NUMBER = {name: i + 1 for i, name in enumerate(EVENTS)}
REQUESTS = {
    "Configure": nri_pb2.ConfigureRequest, "Synchronize": nri_pb2.SynchronizeRequest,
    "Shutdown": nri_pb2.Empty, "StateChange": nri_pb2.StateChangeEvent,
    **{m: getattr(nri_pb2, f"{m}Request") for m in EVENTS},
}


class TestPlugin:
    def __init__(self, sock: socket.socket, name: str, idx: str, settings: dict[str, Any]):
        self.sock = sock
        self.name, self.idx = name, idx
        self.settings = settings
        self.lock = threading.Lock()
        self.pending: dict[int, threading.Event] = {}
        self.answers: dict[int, ttrpc_pb2.Response] = {}
        self.buffers = {1: bytearray(), 2: bytearray()}
        self.next_id = 1
        self.done = threading.Event()

    # ---- wire -------------------------------------------------------------
    def send(self, conn: int, stream: int, kind: int, data: bytes) -> None:
        msg = MSG.pack(len(data), stream, kind, 0) + data
        with self.lock:
            self.sock.sendall(FRAME.pack(conn, len(msg)) + msg)

    def reader(self) -> None:
        try:
            while True:
                head = self.recv_exact(FRAME.size)
                conn, length = FRAME.unpack(head)
                data = self.recv_exact(length)
                if conn not in self.buffers:
                    continue
                buf = self.buffers[conn]
                buf += data
                while len(buf) >= MSG.size:
                    size, stream, kind, _flags = MSG.unpack_from(buf)
                    if len(buf) < MSG.size + size:
                        break
                    body = bytes(buf[MSG.size:MSG.size + size])
                    del buf[:MSG.size + size]
                    self.dispatch(conn, stream, kind, body)
        except (OSError, EOFError):
            pass
        self.log({"event": "disconnected"})
        self.done.set()

    def recv_exact(self, size: int) -> bytes:
        out = b""
        while len(out) < size:
            chunk = self.sock.recv(size - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    def dispatch(self, conn: int, stream: int, kind: int, body: bytes) -> None:
        if conn == 2 and kind == 2:  # a response to our call
            self.answers[stream] = ttrpc_pb2.Response.FromString(body)
            self.pending.pop(stream, threading.Event()).set()
        elif conn == 1 and kind == 1:  # the runtime calls us
            req = ttrpc_pb2.Request.FromString(body)
            threading.Thread(target=self.serve, args=(stream, req), daemon=True).start()

    def call(self, method: str, msg: Any, timeout: float = 10) -> ttrpc_pb2.Response:
        stream = self.next_id
        self.next_id += 2
        done = self.pending[stream] = threading.Event()
        req = ttrpc_pb2.Request(service=f"{PKG}.Runtime", method=method,
                                payload=msg.SerializeToString())
        self.send(2, stream, 1, req.SerializeToString())
        if not done.wait(timeout):
            raise TimeoutError(method)
        return self.answers.pop(stream)

    # ---- behaviour ----------------------------------------------------------------
    def log(self, entry: dict[str, Any]) -> None:
        path = self.settings.get("log")
        if path:
            entry = {"plugin": f"{self.idx}-{self.name}", "time": time.time(), **entry}
            with open(path, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def marker(self, kind: str, method: str) -> str | None:
        control = self.settings.get("control")
        if not control:
            return None
        try:
            return (Path(control) / f"{kind}-{method}").read_text()
        except FileNotFoundError:
            return None

    def serve(self, stream: int, req: ttrpc_pb2.Request) -> None:
        method = req.method
        msg = REQUESTS[method].FromString(req.payload) if method in REQUESTS else None
        self.record(method, msg)
        seconds = self.marker("sleep", method)
        if seconds is not None:
            time.sleep(float(seconds or "10"))
        if self.marker("crash", method) is not None:
            self.log({"event": "crashing", "method": method})
            os._exit(3)
        failure = self.marker("fail", method)
        resp = ttrpc_pb2.Response()
        if method not in REQUESTS:
            resp.status.code, resp.status.message = 12, f"{method} unknown to the test plugin"
        elif failure is not None:
            resp.status.code, resp.status.message = 2, failure or f"{method} failed on purpose"
        else:
            resp.payload = self.answer(method, msg).SerializeToString()
        with contextlib.suppress(OSError):
            self.send(1, stream, 2, resp.SerializeToString())

    def record(self, method: str, msg: Any) -> None:
        entry: dict[str, Any] = {"event": method}
        pod = getattr(msg, "pod", None)
        ctr = getattr(msg, "container", None)
        if pod is not None and pod.id:
            entry.update(pod_id=pod.id, pod_name=pod.name, pod_uid=pod.uid)
        if ctr is not None and ctr.id:
            entry.update(container_id=ctr.id, container_name=ctr.name,
                         container_env=list(ctr.env), state=ctr.state)
        if method == "Synchronize":
            entry.update(pods=[p.id for p in msg.pods], containers=[c.id for c in msg.containers],
                         more=msg.more)
        if method == "Configure":
            entry.update(runtime=msg.runtime_name, request_timeout=msg.request_timeout,
                         config=msg.config)
        if method == "UpdateContainer":
            entry.update(cpus=msg.linux_resources.cpu.cpus)
        self.log(entry)

    def answer(self, method: str, msg: Any) -> Any:
        s = self.settings
        if method == "Configure":
            if msg.config:  # a started plugin's settings come from its .conf file
                s.update(json.loads(msg.config))
            wanted = s.get("events") or EVENTS
            mask = 0
            for name in wanted:
                mask |= 1 << (EVENT_NUMBER[name] - 1)
            return nri_pb2.ConfigureResponse(events=mask)
        if method == "Synchronize":
            if not msg.more and (s.get("update_after_sync") or s.get("evict_after_sync")):
                threading.Thread(target=self.update_unasked, daemon=True).start()
            return nri_pb2.SynchronizeResponse(more=msg.more)
        if method == "CreateContainer":
            return self.adjust()
        return getattr(nri_pb2, f"{method}Response", nri_pb2.Empty)()

    def adjust(self) -> nri_pb2.CreateContainerResponse:
        s = self.settings
        out = nri_pb2.CreateContainerResponse()
        for key, value in (s.get("env") or {}).items():
            out.adjust.env.add(key=key, value=value)
        for m in s.get("mounts") or []:
            out.adjust.mounts.add(**m)
        for key, value in (s.get("annotations") or {}).items():
            out.adjust.annotations[key] = value
        if s.get("cpuset"):
            out.adjust.linux.resources.cpu.cpus = s["cpuset"]
        if s.get("update_on_create"):
            update = out.update.add(container_id=s["update_on_create"])
            update.linux.resources.cpu.cpus = s.get("update_cpuset", "0")
        if s.get("evict_on_create"):
            out.evict.add(container_id=s["evict_on_create"], reason="test plugin evicts")
        if s.get("adjust"):
            json_format.ParseDict(s["adjust"], out.adjust)
        return out

    def update_unasked(self) -> None:
        """UpdateContainers on our own, shortly after Synchronize was answered."""
        time.sleep(0.2)
        s = self.settings
        req = nri_pb2.UpdateContainersRequest()
        if s.get("update_after_sync"):
            update = req.update.add(container_id=s["update_after_sync"])
            update.linux.resources.cpu.cpus = s.get("update_cpuset", "0")
        if s.get("evict_after_sync"):
            req.evict.add(container_id=s["evict_after_sync"], reason="test plugin evicts")
        resp = self.call("UpdateContainers", req)
        failed = []
        if not resp.status.code:
            failed = [u.container_id for u in
                      nri_pb2.UpdateContainersResponse.FromString(resp.payload).failed]
        self.log({"event": "UpdateContainers-answered", "code": resp.status.code,
                  "failed": failed})

    def run(self) -> int:
        threading.Thread(target=self.reader, daemon=True).start()
        resp = self.call("RegisterPlugin", nri_pb2.RegisterPluginRequest(
            plugin_name=self.name, plugin_idx=self.idx, NRI_version="test"))
        if resp.status.code:
            self.log({"event": "register-refused", "message": resp.status.message})
            return 1
        self.done.wait()
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", help="the runtime's NRI socket")
    parser.add_argument("--name", default=os.environ.get("NRI_PLUGIN_NAME", "test"))
    parser.add_argument("--idx", default=os.environ.get("NRI_PLUGIN_IDX", "10"))
    parser.add_argument("--config", default="", help="settings as JSON")
    opts = parser.parse_args()
    if opts.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(opts.socket)
        settings = json.loads(opts.config or "{}")
    else:
        sock = socket.socket(fileno=int(os.environ["NRI_PLUGIN_SOCKET"]))
        settings = {}
    return TestPlugin(sock, opts.name, opts.idx, settings).run()


if __name__ == "__main__":
    sys.exit(main())
