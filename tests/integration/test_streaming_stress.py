"""Streaming under load: many sessions at once, and a slow reader of a large output.

Each test starts its own daemon (test_streaming's ``Env``: one host-network pod running
busybox ``sleep``) and reads the daemon's fds, threads and RSS from /proc.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.images import StandardImages
from support.registry import Registry
from support.stream_client import WsSession
from test_streaming import V5, Env, _exec_procs, _Forwarder

from api import api_pb2 as pb

EXECS = 50
FORWARDS = 20
PAYLOAD = 256 << 10  # bytes echoed through each port-forward
SLOW_CHUNK = 64 << 10
MIB = 1 << 20
RPC_WORKERS = 8


@pytest.fixture
def daemon(registry: Registry, test_images: StandardImages) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("streaming tests need root (containers)")
    e = Env(registry, test_images)
    (e.base / "crictl.yaml").write_text("")
    # A small rpc pool, which the warm-up fills: its threads then stay in the baseline.
    (e.peapod.config_dir / "50-workers.yaml").write_text(f"grpc_workers: {RPC_WORKERS}\n")
    with e.serving():
        yield e


def _pid(env: Env) -> int:
    assert env.peapod.proc is not None
    return env.peapod.proc.pid


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _settles(read: Callable[[], int], limit: int, timeout: float = 15) -> int:
    """``read()`` once it is at most ``limit``, or its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = read()
    while value > limit and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return value


class _Echo(socketserver.ThreadingTCPServer):
    """A host loopback echo server: the host-network pod's port-forwards dial it."""

    daemon_threads = True

    def __init__(self) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                while data := self.request.recv(65536):
                    self.request.sendall(data)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def _one_exec(env: Env, i: int, hold: threading.Barrier) -> bytes:
    """An exec session that waits on stdin until every session is open at once."""
    s = WsSession(env.exec_url(env.ctr, ["sh", "-c", "echo up; read x; echo got $x"],
                               stdin=True), [V5])  # fmt: skip
    assert s.wait_for(1) == b"up\n"
    hold.wait(timeout=40)
    s.send(0, f"{i}\n".encode())
    r = s.finish()
    assert json.loads(r.out(3))["status"] == "Success", r.channels
    return r.out(1)


def _one_forward(env: Env, echo: _Echo, i: int) -> bool:
    fwd = _Forwarder(env, env.pod_id, echo.port, "spdy")
    try:
        payload = os.urandom(PAYLOAD)
        got = b""
        with socket.create_connection(("127.0.0.1", fwd.local), timeout=20) as s:
            sender = threading.Thread(target=s.sendall, args=(payload,))
            sender.start()
            while len(got) < PAYLOAD and (data := s.recv(65536)):
                got += data
            sender.join()
        return got == payload
    finally:
        fwd.stop()


def test_50_execs_and_20_port_forwards_leave_no_fds_threads_or_memory(daemon: Env) -> None:
    env = daemon
    pid = _pid(env)
    echo = _Echo()
    try:
        # Warm-up: one of each, so lazily made pools and imports are in the baseline.
        assert _one_exec(env, 0, threading.Barrier(1)) == b"up\ngot 0\n"
        assert _one_forward(env, echo, 0)
        with ThreadPoolExecutor(2 * RPC_WORKERS) as pool:  # rpcs that each hold a worker
            list(pool.map(lambda _: env.rt.ExecSync(pb.ExecSyncRequest(  # fill the rpc pool
                container_id=env.ctr, cmd=["sleep", "0.5"], timeout=10), timeout=30),
                range(2 * RPC_WORKERS)))  # fmt: skip
        time.sleep(1)
        fds, threads, rss = _fds(pid), _threads(pid), _rss_mib(pid)

        start = time.monotonic()
        hold = threading.Barrier(EXECS)
        with ThreadPoolExecutor(EXECS + FORWARDS) as pool:
            execs = [pool.submit(_one_exec, env, i, hold) for i in range(EXECS)]
            forwards = [pool.submit(_one_forward, env, echo, i) for i in range(FORWARDS)]
            outs = [f.result(timeout=50) for f in execs]
            echoed = [f.result(timeout=50) for f in forwards]
        assert outs == [f"up\ngot {i}\n".encode() for i in range(EXECS)]
        assert echoed == [True] * FORWARDS  # every byte came back, in order
        assert time.monotonic() - start < 45

        after_fds = _settles(lambda: _fds(pid), fds + 2)
        after_threads = _settles(lambda: _threads(pid), threads + 1)
        assert after_fds <= fds + 2, (fds, after_fds, os.listdir(f"/proc/{pid}/fd"))
        assert after_threads <= threads + 1, (threads, after_threads)
        assert _rss_mib(pid) - rss <= 16, (rss, _rss_mib(pid))
        assert not _exec_procs(env)
    finally:
        echo.shutdown()
        echo.server_close()


def test_a_slow_reader_of_a_large_exec_output_keeps_daemon_memory_flat(daemon: Env) -> None:
    env = daemon
    pid = _pid(env)
    assert _one_exec(env, 0, threading.Barrier(1)) == b"up\ngot 0\n"  # warm-up
    base = _rss_mib(pid)
    s = WsSession(env.exec_url(env.ctr, ["head", "-c", str(4 << 30), "/dev/zero"]), [V5])
    got, peak = 0, base
    end = time.monotonic() + 10
    while time.monotonic() < end:  # 64 KiB every 100 ms: ~6 MiB while head could write GiBs
        data = s.sock.recv(SLOW_CHUNK)
        assert data, "the stream ended early"
        got += len(data)
        peak = max(peak, _rss_mib(pid))
        time.sleep(0.1)
    assert got > 2 * MIB
    assert peak - base <= 16, (base, peak)
    s.sock.close()
    deadline = time.monotonic() + 5
    while _exec_procs(env):  # the command ends with its reader
        assert time.monotonic() < deadline, "the exec outlived its slow reader"
        time.sleep(0.1)
