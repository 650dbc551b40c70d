"""Exec, Attach and PortForward streaming through a real peapod, runc and crictl.

One daemon serves the module with one host-network pod running busybox ``sleep``.
crictl from PEAPOD_CLIENTS_DIR drives the common paths; ``support.stream_client``
the corner cases (subprotocols, stdin EOF, resize, replayed tokens, bad frames).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.daemon import Peapod, registries_conf_text
from support.images import StandardImages
from support.registry import Registry
from support.stream_client import WsSession

from api import api_pb2 as pb

CLIENTS = Path(os.environ.get("PEAPOD_CLIENTS_DIR", Path(__file__).resolve().parents[2]
                              / ".cache" / "clients"))  # fmt: skip
CRICTL = CLIENTS / "crictl"
V5 = "v5.channel.k8s.io"


class Env:
    def __init__(self, registry: Registry, images: StandardImages,
                 streaming: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.base = Path(tempfile.mkdtemp(prefix="peapod-stream-"))
        net = self.base / "net.d"
        net.mkdir()
        (net / "10-lo.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": f"pp-lo-{secrets.token_hex(3)}",
            "plugins": [{"type": "loopback"}]}))  # fmt: skip
        self.peapod = Peapod(self.base, registries_conf=registries_conf_text([registry.host]),
                             config={"network": {"network_dir": str(net),
                                                 "plugin_dirs": ["/usr/lib/cni"]},
                                     "streaming": streaming or {}})  # fmt: skip
        self.image = images.busybox.ref

    @property
    def rt(self) -> Any:
        return self.peapod.runtime

    @contextlib.contextmanager
    def serving(self) -> Iterator[Env]:
        """The daemon started with one running container (pod_id, ctr); all removed after,
        through the daemon, restarted first if a test stopped it."""
        self.peapod.start()
        try:
            self.peapod.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=self.image)),
                                         timeout=120)  # fmt: skip
            self.pod_id = self.pod()
            self.ctr = self.run(self.pod_id, ["sleep", "3600"])
            yield self
        finally:
            if self.peapod.proc is None or self.peapod.proc.poll() is not None:
                self.peapod.proc = None
                self.peapod.start()  # the pods outlive a stopped daemon: remove them through it
            try:
                for item in self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items:
                    self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=item.id),
                                             timeout=60)  # fmt: skip
            finally:
                self.peapod.cleanup()

    def pod(self) -> str:
        uid = secrets.token_hex(6)
        cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=f"p{uid}", uid=uid,
                                                                 namespace="test"),
                                  log_directory=str(self.base / "logs" / uid))  # fmt: skip
        cfg.linux.security_context.namespace_options.network = pb.NODE
        return str(self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60)
                   .pod_sandbox_id)  # fmt: skip

    def run(self, pod: str, command: list[str], name: str = "c", **kw: Any) -> str:
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                 image=pb.ImageSpec(image=self.image), command=command,
                                 log_path=f"{name}.log", **kw)  # fmt: skip
        ctr = self.rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=cfg),
                                      timeout=60).container_id  # fmt: skip
        self.rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=30)
        return str(ctr)

    def exec_url(self, ctr: str, cmd: list[str], **kw: Any) -> str:
        kw.setdefault("stdout", True)
        req = pb.ExecRequest(container_id=ctr, cmd=cmd, **kw)
        return str(self.rt.Exec(req, timeout=10).url)

    def crictl(self, *args: str, input: bytes | None = None, timeout: float = 60
               ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        ep = f"unix://{self.peapod.socket}"
        return subprocess.run([str(CRICTL), "--runtime-endpoint", ep, "--image-endpoint", ep,
                               "--config", str(self.base / "crictl.yaml"), *args],
                              input=input, capture_output=True, timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def env(registry: Registry, test_images: StandardImages) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("streaming tests need root (containers)")
    if not CRICTL.exists():
        pytest.fail(f"no crictl at {CRICTL}: run deploy/build-clients.sh")
    e = Env(registry, test_images)
    (e.base / "crictl.yaml").write_text("")
    with e.serving():
        yield e


def _exec_procs(env: Env) -> list[int]:
    """runc exec processes this daemon started (their argv names its exec dir)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(env.base).encode() in argv and b"\0exec\0" in argv:
                found.append(int(pid))
    return found


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("kw, needle", [
    ({"cmd": []}, "cmd is empty"),
    ({"cmd": ["true"], "stdout": False}, "at least one of stdin"),
    ({"cmd": ["true"], "tty": True, "stderr": True}, "tty and stderr"),
])  # fmt: skip
def test_exec_rejects_bad_requests(env: Env, kw: dict[str, Any], needle: str) -> None:
    import grpc

    kw.setdefault("stdout", True)
    with pytest.raises(grpc.RpcError) as info:
        env.rt.Exec(pb.ExecRequest(container_id=env.ctr, **kw), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in info.value.details()


def test_exec_attach_portforward_need_live_targets(env: Env) -> None:
    import grpc

    cases = [
        (env.rt.Exec, pb.ExecRequest(container_id="f" * 64, cmd=["true"], stdout=True),
         grpc.StatusCode.NOT_FOUND),
        (env.rt.Attach, pb.AttachRequest(container_id="f" * 64, stdout=True),
         grpc.StatusCode.NOT_FOUND),
        (env.rt.PortForward, pb.PortForwardRequest(pod_sandbox_id="f" * 64),
         grpc.StatusCode.NOT_FOUND),
        (env.rt.PortForward, pb.PortForwardRequest(pod_sandbox_id=env.pod_id, port=[0]),
         grpc.StatusCode.INVALID_ARGUMENT),
        (env.rt.PortForward, pb.PortForwardRequest(pod_sandbox_id=env.pod_id, port=[65536]),
         grpc.StatusCode.INVALID_ARGUMENT),
    ]  # fmt: skip
    for call, req, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            call(req, timeout=10)
        assert info.value.code() == code, (req, info.value.details())
    stopped = env.run(env.pod_id, ["true"], name=f"done{secrets.token_hex(2)}")
    deadline = time.monotonic() + 10
    while env.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=stopped)
                                 ).status.state != pb.CONTAINER_EXITED:  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(grpc.RpcError) as info:
        env.rt.Exec(pb.ExecRequest(container_id=stopped, cmd=["true"], stdout=True), timeout=10)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "exited" in info.value.details()


def test_token_is_single_use_and_unknown_ones_get_404(env: Env) -> None:
    url = env.exec_url(env.ctr, ["echo", "-n", "once"])
    first = WsSession(url, [V5]).finish()
    assert first.out(1) == b"once"
    for target in (url, url.rsplit("/", 1)[0] + "/nosuchtoken"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(target, timeout=10)
        assert info.value.code == 404


def test_garbage_instead_of_an_upgrade_gets_400(env: Env) -> None:
    url = env.exec_url(env.ctr, ["true"])
    host, port = url.split("/")[2].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"\x16\x03\x01 this is not http\r\n\r\n")
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400"), answer
    # A plain GET with a valid token but no Upgrade header is refused with a reason.
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=10)
    assert info.value.code == 400
    assert b"Upgrade" in info.value.read()


# ---------------------------------------------------------------- WebSocket exec
def test_websocket_exec_status_and_exit_code(env: Env) -> None:
    ok = WsSession(env.exec_url(env.ctr, ["sh", "-c", "echo out; echo err >&2"], stderr=True),
                   [V5]).finish()  # fmt: skip
    assert (ok.out(1), ok.out(2), ok.close_code) == (b"out\n", b"err\n", 1000)
    assert json.loads(ok.out(3)) == {"metadata": {}, "status": "Success"}
    bad = WsSession(env.exec_url(env.ctr, ["sh", "-c", "exit 7"]), [V5]).finish()
    status = json.loads(bad.out(3))
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]


def test_websocket_unsupported_subprotocol_names_the_supported_ones(env: Env) -> None:
    s = WsSession(env.exec_url(env.ctr, ["true"]), ["v9.channel.k8s.io"])
    assert s.result.rejected == 403
    s.finish(2)
    assert b"v5.channel.k8s.io" in s.result.body and b"v4.channel.k8s.io" in s.result.body


def test_websocket_stdin_eof_with_v5_close(env: Env) -> None:
    s = WsSession(env.exec_url(env.ctr, ["cat"], stdin=True), [V5])
    s.send(0, b"hello ")
    s.send(0, b"world")
    s.send_raw(bytes([255, 0]))  # v5: stdin is closed
    r = s.finish()
    assert r.out(1) == b"hello world"
    assert json.loads(r.out(3))["status"] == "Success"


def test_websocket_tty_resize(env: Env) -> None:
    s = WsSession(env.exec_url(env.ctr, ["sh", "-c", "sleep 1; stty size"], tty=True), [V5])
    s.send(4, json.dumps({"Width": 123, "Height": 45}).encode())
    r = s.finish()
    assert b"45 123" in r.out(1), r.channels


def test_websocket_frame_on_unknown_channel_is_refused(env: Env) -> None:
    s = WsSession(env.exec_url(env.ctr, ["sleep", "30"], stdin=True), [V5])
    s.send(9, b"x")
    start = time.monotonic()
    r = s.finish(10)
    assert r.close_code == 1008 and "unknown channel 9" in r.close_reason
    assert time.monotonic() - start < 5
    deadline = time.monotonic() + 5
    while _exec_procs(env):  # the command is killed with its session
        assert time.monotonic() < deadline, _exec_procs(env)
        time.sleep(0.1)


def test_client_vanishing_kills_the_command(env: Env) -> None:
    s = WsSession(env.exec_url(env.ctr, ["sleep", "300"]), [V5])
    deadline = time.monotonic() + 5
    while not _exec_procs(env):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    s.sock.close()
    deadline = time.monotonic() + 5
    while _exec_procs(env):
        assert time.monotonic() < deadline, "the exec outlived its client"
        time.sleep(0.1)


def test_crictl_exec_websocket(env: Env) -> None:
    out = env.crictl("exec", "--transport", "websocket", env.ctr, "sh", "-c", "echo -n hi; exit 3")
    assert out.stdout == b"hi"
    # crictl reports a command's failure on stderr and exits 1 itself.
    assert out.returncode == 1 and b"exit code 3" in out.stderr, out.stderr
    ok = env.crictl("exec", "-i", "--transport", "websocket", env.ctr, "cat", input=b"piped")
    assert (ok.stdout, ok.returncode) == (b"piped", 0), ok.stderr


def _crictl_tty(env: Env, transport: str, script: bytes) -> bytes:
    """``crictl exec -it`` on a pseudo-terminal, typing ``script``; all it printed."""
    import pty
    import select

    master, slave = pty.openpty()
    ep = f"unix://{env.peapod.socket}"
    proc = subprocess.Popen([str(CRICTL), "--runtime-endpoint", ep, "--config",
                             str(env.base / "crictl.yaml"), "exec", "-it", "--transport",
                             transport, env.ctr, "sh"],
                            stdin=slave, stdout=slave, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    os.close(slave)
    out = b""
    time.sleep(0.5)
    os.write(master, script)
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        if select.select([master], [], [], 0.2)[0]:
            try:
                out += os.read(master, 4096)
            except OSError:
                break
    proc.wait(5)
    os.close(master)
    return out


@pytest.mark.parametrize("transport", ["websocket", "spdy"])
def test_crictl_exec_tty(env: Env, transport: str) -> None:
    out = _crictl_tty(env, transport, b"echo tty-$((40+2)); tty; exit\n")
    assert b"tty-42" in out and b"/dev/pts/" in out, out


def test_crictl_exec_spdy(env: Env) -> None:
    out = env.crictl("exec", "--transport", "spdy", env.ctr, "sh", "-c", "echo -n hi; exit 3")
    assert out.stdout == b"hi"
    assert out.returncode == 1 and b"exit code 3" in out.stderr, out.stderr
    ok = env.crictl("exec", "-i", env.ctr, "sh", "-c", "cat; echo -n e >&2", input=b"piped")
    assert (ok.stdout, ok.returncode) == (b"piped", 0), ok.stderr


def _spdy_upgrade(url: str, protocol: str) -> tuple[socket.socket, bytes]:
    host, port = url.split("/")[2].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    path = "/" + url.split("/", 3)[3]
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
              f"X-Stream-Protocol-Version: {protocol}\r\n\r\n".encode())  # fmt: skip
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    return s, head


def test_spdy_unsupported_protocol_and_malformed_frame(env: Env) -> None:
    s, head = _spdy_upgrade(env.exec_url(env.ctr, ["true"]), "v9.channel.k8s.io")
    s.close()
    assert head.startswith(b"HTTP/1.1 403") and b"v4.channel.k8s.io" in head, head
    s, head = _spdy_upgrade(env.exec_url(env.ctr, ["sleep", "30"]), "v4.channel.k8s.io")
    assert head.startswith(b"HTTP/1.1 101"), head
    s.sendall(bytes([0x80, 0x02, 0, 1, 0, 0, 0, 0]))  # a control frame of SPDY version 2
    frame = s.recv(16)
    s.close()
    goaway = bytes([0x80, 0x03, 0, 7])
    assert frame[:4] == goaway and frame[-4:] == (1).to_bytes(4, "big"), frame  # PROTOCOL_ERROR
    assert not _exec_procs(env)


# ---------------------------------------------------------------- attach
def _attach_url(env: Env, ctr: str, **kw: Any) -> str:
    return str(env.rt.Attach(pb.AttachRequest(container_id=ctr, **kw), timeout=10).url)


def _state(env: Env, ctr: str) -> int:
    return int(env.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr),
                                      timeout=10).status.state)  # fmt: skip


def _read_until(s: WsSession, channel: int, needle: bytes, timeout: float = 15) -> bytes:
    deadline = time.monotonic() + timeout
    s.sock.settimeout(1)
    while needle not in s.result.out(channel) and time.monotonic() < deadline:
        try:
            if not s._pump():
                break
        except TimeoutError:
            continue
    return s.result.out(channel)


@pytest.fixture(scope="module")
def shell(env: Env) -> str:
    """A running ``sh`` reading its stdin (kept open across attach sessions)."""
    return env.run(env.pod_id, ["sh"], name="shell", stdin=True)


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_crictl_attach_then_detach_leaves_it_running(env: Env, shell: str, transport: str
                                                     ) -> None:  # fmt: skip
    ep = f"unix://{env.peapod.socket}"
    proc = subprocess.Popen([str(CRICTL), "--runtime-endpoint", ep, "--config",
                             str(env.base / "crictl.yaml"), "attach", "-i", "--transport",
                             transport, shell], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(f"echo {transport}-$((40+2))\n".encode())
        proc.stdin.flush()
        line = proc.stdout.readline()  # the echo came back through the session
        proc.stdin.close()  # stdin EOF detaches (conmon keeps the shell's stdin open)
        assert proc.wait(15) == 0, proc.stderr.read() if proc.stderr else b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert line == f"{transport}-42\n".encode(), line
    assert _state(env, shell) == pb.CONTAINER_RUNNING


def test_two_attach_sessions_share_the_output(env: Env, shell: str) -> None:
    a = WsSession(_attach_url(env, shell, stdin=True, stdout=True), [V5])
    b = WsSession(_attach_url(env, shell, stdout=True), [V5])
    time.sleep(0.3)
    a.send(0, b"echo shared-$((6*7))\n")
    assert b"shared-42" in _read_until(a, 1, b"shared-42")
    assert b"shared-42" in _read_until(b, 1, b"shared-42")
    a.sock.close()  # one session vanishing leaves the other and the container alone
    a2 = WsSession(_attach_url(env, shell, stdin=True, stdout=True), [V5])
    time.sleep(0.3)
    a2.send(0, b"echo again\n")
    assert b"again" in _read_until(b, 1, b"again")
    a2.sock.close()
    b.sock.close()
    time.sleep(0.5)
    assert _state(env, shell) == pb.CONTAINER_RUNNING


def test_attach_resize_reaches_the_tty_and_exit_ends_the_session(env: Env) -> None:
    ctr = env.run(env.pod_id, ["sh"], name=f"tty{secrets.token_hex(2)}", stdin=True, tty=True)
    s = WsSession(_attach_url(env, ctr, stdin=True, stdout=True, tty=True), [V5])
    s.send(4, json.dumps({"Width": 123, "Height": 45}).encode())
    time.sleep(0.5)
    s.send(0, b"stty size\n")
    assert b"45 123" in _read_until(s, 1, b"45 123"), s.result.channels
    s.send(0, b"exit\n")
    r = s.finish(10)  # the container's exit ends the session cleanly
    assert r.close_code == 1000 and json.loads(r.out(3))["status"] == "Success"


# ---------------------------------------------------------------- port-forward
def _netns_pod(env: Env) -> str:
    """A pod with its own network namespace (loopback only) serving HTTP on 8080."""
    uid = secrets.token_hex(6)
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=f"n{uid}", uid=uid,
                                                             namespace="test"),
                              log_directory=str(env.base / "logs" / uid))  # fmt: skip
    pod = str(env.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60)
              .pod_sandbox_id)  # fmt: skip
    env.run(pod, ["sh", "-c", "echo hello-pf > /tmp/index.html; "
                  "exec /bin/busybox httpd -f -p 127.0.0.1:8080 -h /tmp"], name="web")  # fmt: skip
    return pod


class _Forwarder:
    """``crictl port-forward`` in the background on a free local port."""

    def __init__(self, env: Env, pod: str, remote: int, transport: str) -> None:
        from support.daemon import free_port

        self.local = free_port()
        ep = f"unix://{env.peapod.socket}"
        self.proc = subprocess.Popen([str(CRICTL), "--runtime-endpoint", ep, "--config",
                                      str(env.base / "crictl.yaml"), "port-forward",
                                      "--transport", transport, pod, f"{self.local}:{remote}"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.local)) == 0:
                    return
            assert self.proc.poll() is None, self.proc.communicate()
            time.sleep(0.1)
        raise AssertionError("crictl port-forward did not listen")

    def get(self, path: str = "/") -> bytes:
        url = f"http://127.0.0.1:{self.local}{path}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return bytes(r.read())

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=10)
        return err.decode(errors="replace")


@pytest.fixture(scope="module")
def web_pod(env: Env) -> str:
    pod = _netns_pod(env)
    deadline = time.monotonic() + 10  # httpd is up once exec can reach it
    while env.crictl("exec", env.rt.ListContainers(pb.ListContainersRequest(
            filter=pb.ContainerFilter(pod_sandbox_id=pod)), timeout=10).containers[0].id,
            "wget", "-qO-", "http://127.0.0.1:8080/").stdout != b"hello-pf\n":  # fmt: skip
        assert time.monotonic() < deadline, "httpd did not start in the pod"
        time.sleep(0.2)
    return pod


@pytest.mark.parametrize("transport", ["spdy", "websocket"])
def test_crictl_port_forward_into_the_pod_netns(env: Env, web_pod: str, transport: str) -> None:
    with socket.socket() as s:  # 8080 is the pod's loopback, not the host's
        assert s.connect_ex(("127.0.0.1", 8080)) != 0
    fwd = _Forwarder(env, web_pod, 8080, transport)
    try:
        assert fwd.get("/index.html") == b"hello-pf\n"
        assert fwd.get("/index.html") == b"hello-pf\n"  # one session, many connections
    finally:
        fwd.stop()


def test_port_forward_to_a_closed_port_reports_it(env: Env, web_pod: str) -> None:
    fwd = _Forwarder(env, web_pod, 9, "spdy")
    try:
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            fwd.get()
    finally:
        err = fwd.stop()
    assert "cannot connect to localhost:9" in err and "refused" in err, err


def test_websocket_channel_pair_port_forward(env: Env, web_pod: str) -> None:
    url = str(env.rt.PortForward(pb.PortForwardRequest(pod_sandbox_id=web_pod, port=[8080]),
                                 timeout=10).url)  # fmt: skip
    s = WsSession(f"{url}?ports=8080,9", ["v4.channel.k8s.io"])
    assert s.subprotocol == "v4.channel.k8s.io"
    s.send(0, b"GET /index.html HTTP/1.0\r\n\r\n")
    r = s.finish(10)  # the session ends once the only dialled port's connection has
    web, closed = struct.pack("<H", 8080), struct.pack("<H", 9)
    assert r.out(1) == web and r.out(2) == closed  # each channel opens with its port
    assert r.out(0).startswith(web + b"HTTP/1.") and r.out(0).endswith(b"\r\n\r\nhello-pf\n")
    assert r.out(3).startswith(closed) and b"refused" in r.out(3), r.channels
    assert r.close_code == 1000


def test_websocket_channel_pair_port_forward_refuses_a_bad_port(env: Env, web_pod: str) -> None:
    url = str(env.rt.PortForward(pb.PortForwardRequest(pod_sandbox_id=web_pod), timeout=10).url)
    s = WsSession(f"{url}?ports=70000", ["v4.channel.k8s.io"])
    assert s.result.rejected == 400
    assert b"invalid port '70000'" in s.finish(5).body


def test_port_forward_in_a_host_network_pod_dials_host_loopback(env: Env) -> None:
    import http.server
    import threading

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"host-side\n")

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    fwd = _Forwarder(env, env.pod_id, srv.server_address[1], "spdy")
    try:
        assert fwd.get() == b"host-side\n"
    finally:
        fwd.stop()
        srv.shutdown()
        srv.server_close()


# ---------------------------------------------------------------- lifetime
@pytest.fixture
def own(registry: Registry, test_images: StandardImages, request: Any) -> Iterator[Env]:
    """A separate daemon (streaming config from the test's param) with a host-network pod."""
    e = Env(registry, test_images, getattr(request, "param", None))
    (e.base / "crictl.yaml").write_text("")
    with e.serving():
        yield e


def _ended_at(s: WsSession, timeout: float) -> float:
    """When the server ended the session (monotonic), reading until then."""
    deadline = time.monotonic() + timeout
    s.sock.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            if not s._pump() or s.result.close_code is not None:
                return time.monotonic()
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic()
    raise AssertionError("the session did not end")


@pytest.mark.parametrize("own", [{"idle_timeout": 1.5}], indirect=True)
def test_idle_timeout_ends_a_silent_session(own: Env) -> None:
    s = WsSession(own.exec_url(own.ctr, ["sleep", "300"], stdin=True), [V5])
    start = time.monotonic()
    took = _ended_at(s, 10) - start
    assert 1.2 < took < 4, took
    deadline = time.monotonic() + 5
    while _exec_procs(own):  # the command went with its session
        assert time.monotonic() < deadline, _exec_procs(own)
        time.sleep(0.1)


def test_sigterm_ends_exec_attach_and_port_forward_within_a_second(own: Env) -> None:
    shell = own.run(own.pod_id, ["sh"], name="shell", stdin=True)
    exec_s = WsSession(own.exec_url(own.ctr, ["sleep", "300"], stdin=True), [V5])
    attach_s = WsSession(_attach_url(own, shell, stdin=True, stdout=True), [V5])
    listener = socket.create_server(("127.0.0.1", 0))
    fwd = _Forwarder(own, own.pod_id, listener.getsockname()[1], "spdy")
    client = socket.create_connection(("127.0.0.1", fwd.local), timeout=10)
    client.sendall(b"ping")
    listener.settimeout(10)
    while True:  # the forwarder's readiness probe arrives first, already closed
        pod_side, _ = listener.accept()
        pod_side.settimeout(10)
        if pod_side.recv(4) == b"ping":
            break
        pod_side.close()
    pod_side.settimeout(5)
    time.sleep(0.3)
    assert own.peapod.proc is not None
    own.peapod.proc.send_signal(15)
    start = time.monotonic()
    ends = [_ended_at(exec_s, 5), _ended_at(attach_s, 5)]
    assert pod_side.recv(4096) == b""  # the forwarded connection was closed from our side
    ends.append(time.monotonic())
    assert max(ends) - start < 1.0, [e - start for e in ends]
    assert own.peapod.proc.wait(30) == 0, own.peapod.log_tail()
    fwd.stop()
    for sock in (client, pod_side, listener):
        sock.close()
    assert not _exec_procs(own)
