"""Scenario 9: streaming. Exec and PortForward through each runtime's own streaming server.

The same clients drive every runtime: crictl from PEAPOD_CLIENTS_DIR (SPDY, its default
transport) for the round trips and the bulk transfers, and the tests' wsproto client
(``support.stream_client``, v4.channel.k8s.io) for the time from the Exec rpc to the
first output byte. Each runtime gets one pod whose container keeps busybox ``nc``
listeners on its own loopback: one per upload (reads into /dev/null until the client's
EOF) and one per download (``head -c SIZE /dev/zero``). Transfers alternate runtimes
round by round. CPU is the daemon's own utime + stime plus its monitors' (containerd's
shims copy exec output between pipes and FIFOs; peapod's and CRI-O's conmons are idle
during an exec stream, which their daemons relay), children excluded, so the
container's ``head`` and ``runc`` are not counted for any. The slow reader takes
64 KiB every 100 ms for ``SLOW_SECONDS`` while the daemon's RSS is sampled.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from measure import cpu_seconds, memory
from runtimes import RuntimeUnderTest
from scenarios import Comparison
from support.ports import free_port
from support.stream_client import WsSession

from api import api_pb2 as pb

S9 = "9 streaming"
REPO = Path(__file__).resolve().parents[2]
CRICTL = Path(os.environ.get("PEAPOD_CLIENTS_DIR", REPO / ".cache" / "clients")) / "crictl"
GIB = 1 << 30
CHUNK = 1 << 20
SLOW_CHUNK = 64 << 10
SLOW_PERIOD = 0.1
SLOW_SECONDS = 10.0
UP, DOWN, SLOW = 7000, 7100, 7200  # pod-side port bases


def crictl(rt: RuntimeUnderTest, *args: str) -> list[str]:
    return [str(CRICTL), "--config", "/dev/null", "--runtime-endpoint", rt.endpoint,
            "--timeout", "30s", *args]  # fmt: skip


def listeners(rounds: int, size: int) -> list[str]:
    """The pod's command: one-shot nc listeners for every upload, download and slow read."""
    lines = ["mkfifo /tmp/in", "sleep 1000000 > /tmp/in &"]  # a stdin that never ends
    lines += [f"nc -l -p {UP + i} < /tmp/in > /dev/null &" for i in range(rounds)]
    lines += [f"head -c {size} /dev/zero | nc -l -p {DOWN + i} &" for i in range(rounds)]
    lines += [f"head -c {4 * GIB} /dev/zero | nc -l -p {SLOW} &"]
    lines += ["trap 'exit 0' TERM", "while true; do sleep 1; done"]
    return ["sh", "-c", "\n".join(lines)]


class Target:
    """One runtime's pod, its container and a crictl port-forward to its listeners."""

    def __init__(self, rt: RuntimeUnderTest, image: str, rounds: int, size: int) -> None:
        d = rt.driver
        assert d is not None
        self.rt = rt
        cfg = d.pod_config("stream")
        self.pod = d.run_pod(cfg)
        self.ctr = d.create_container(self.pod, cfg, image, listeners(rounds, size))
        d.start_container(self.ctr)
        remote = [*(UP + i for i in range(rounds)), *(DOWN + i for i in range(rounds)), SLOW]
        self.local = {r: free_port() for r in remote}
        self.forward = subprocess.Popen(
            crictl(rt, "port-forward", self.pod, *(f"{lp}:{r}" for r, lp in self.local.items())),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        self._wait_listening(len(remote))

    def _wait_listening(self, ports: int) -> None:
        """Until crictl says it forwards every port (probing would use up a listener)."""
        assert self.forward.stdout is not None
        seen, buf, deadline = 0, b"", time.monotonic() + 30
        while seen < ports:
            left = deadline - time.monotonic()
            if left <= 0 or self.forward.poll() is not None:
                err = self.forward.stderr.read() if self.forward.stderr else b""
                raise RuntimeError(f"{self.rt.name}: crictl port-forward failed: {err!r}")
            if select.select([self.forward.stdout], [], [], left)[0]:
                buf += os.read(self.forward.stdout.fileno(), 4096)
                seen = buf.count(b"Forwarding from 127.0.0.1")

    def watched(self) -> list[int]:
        """The processes whose CPU a transfer costs: the daemon and its monitors."""
        pids = [p for p in [self.rt.daemon_pid()] if p]
        return pids + self.rt.monitor_pids()

    def close(self) -> None:
        self.forward.terminate()
        try:
            self.forward.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.forward.kill()
            self.forward.communicate()
        d = self.rt.driver
        assert d is not None
        d.stop_container(self.ctr, 0)
        d.stop_pod(self.pod)
        d.remove_pod(self.pod)


@contextmanager
def cpu_of(pids: list[int], into: list[float]) -> Iterator[None]:
    before = sum(cpu_seconds(p, children=False) for p in pids)
    yield
    into.append(sum(cpu_seconds(p, children=False) for p in pids) - before)


def exec_stdout(t: Target, size: int) -> float:
    """Seconds for ``size`` bytes of an exec's stdout to reach crictl's reader."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(crictl(t.rt, "exec", t.ctr, "head", "-c", str(size), "/dev/zero"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    got = 0
    while chunk := proc.stdout.read1(CHUNK):
        got += len(chunk)
    _, err = proc.communicate(timeout=60)
    took = time.perf_counter() - t0
    if proc.returncode != 0 or got != size:
        raise RuntimeError(f"{t.rt.name}: exec stdout gave {got} of {size} bytes: {err!r}")
    return took


def upload(t: Target, port: int, size: int) -> float:
    """Seconds to send ``size`` bytes to a pod listener and see it close after our EOF."""
    block = bytes(CHUNK)
    with socket.create_connection(("127.0.0.1", t.local[port]), timeout=60) as s:
        t0 = time.perf_counter()
        for _ in range(size // CHUNK):
            s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        if s.recv(1):
            raise RuntimeError(f"{t.rt.name}: the upload listener answered")
        return time.perf_counter() - t0


def download(t: Target, port: int, size: int) -> float:
    """Seconds to receive ``size`` bytes from a pod listener up to its EOF."""
    buf = bytearray(CHUNK)
    got = 0
    with socket.create_connection(("127.0.0.1", t.local[port]), timeout=60) as s:
        t0 = time.perf_counter()
        while n := s.recv_into(buf):
            got += n
        took = time.perf_counter() - t0
    if got != size:
        raise RuntimeError(f"{t.rt.name}: port-forward download gave {got} of {size} bytes")
    return took


def rss_kib(pid: int | None) -> int:
    mem = memory(pid) if pid else None
    return mem.rss_kib if mem else 0


def slow_read(t: Target, read: object) -> float:
    """Peak daemon RSS growth (MiB) while ``read(n)`` is called every SLOW_PERIOD."""
    pid = t.rt.daemon_pid()
    base = rss_kib(pid)
    peak = base
    end = time.monotonic() + SLOW_SECONDS
    while time.monotonic() < end:
        data = read(SLOW_CHUNK)  # type: ignore[operator]
        if not data:
            raise RuntimeError(f"{t.rt.name}: the slow read ended early")
        peak = max(peak, rss_kib(pid))
        time.sleep(SLOW_PERIOD)
    return (peak - base) / 1024


def slow_exec(t: Target) -> float:
    proc = subprocess.Popen(crictl(t.rt, "exec", t.ctr, "head", "-c", str(4 * GIB), "/dev/zero"),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    assert proc.stdout is not None
    try:
        return slow_read(t, proc.stdout.read)
    finally:
        proc.kill()
        proc.communicate()


def slow_forward(t: Target) -> float:
    with socket.create_connection(("127.0.0.1", t.local[SLOW]), timeout=60) as s:
        return slow_read(t, lambda n: s.recv(n))


def first_byte(rt: RuntimeUnderTest, ctr: str) -> float:
    """Seconds from the Exec rpc to the first stdout byte over WebSocket."""
    d = rt.driver
    assert d is not None
    t0 = time.perf_counter()
    url = d.runtime.Exec(pb.ExecRequest(container_id=ctr, cmd=["echo", "x"], stdout=True),
                         timeout=10).url  # fmt: skip
    ws = WsSession(url, ["v4.channel.k8s.io"])
    out = ws.wait_for(1)
    took = time.perf_counter() - t0
    ws.finish()
    if out != b"x\n":
        raise RuntimeError(f"{rt.name}: exec over websocket gave {out!r}")
    return took


def run_streaming_bench(run: Comparison, size: int, rounds: int, execs: int) -> None:
    """Scenario 9 for every runtime: round trips, 3 x ``size`` bytes a round, slow readers."""
    mib = size >> 20
    with run.scenario(f"{S9}, {mib} MiB transfers, {rounds} rounds"):
        targets = {rt.name: Target(rt, run.images.busybox, rounds, size) for rt in run.runtimes}
        try:
            trip = run.metric(S9, "crictl exec `true`, wall", "ms")
            first = run.metric(S9, "Exec rpc to first stdout byte (websocket)", "ms")
            for rt in run.rounds(execs):
                t = targets[rt.name]
                t0 = time.perf_counter()
                subprocess.run(crictl(rt, "exec", t.ctr, "true"), check=True,
                               capture_output=True, timeout=60)  # fmt: skip
                trip.add(rt.name, (time.perf_counter() - t0) * 1000)
                first.add(rt.name, first_byte(rt, t.ctr) * 1000)
            kinds = {
                "exec stdout": lambda t, i: exec_stdout(t, size),
                "port-forward upload": lambda t, i: upload(t, UP + i, size),
                "port-forward download": lambda t, i: download(t, DOWN + i, size),
            }
            for kind, transfer in kinds.items():
                rate = run.metric(S9, f"{kind} throughput, {mib} MiB", "MiB/s", "higher")
                cpu = run.metric(S9, f"{kind}, daemon CPU per GiB", "s/GiB")
                for i, rt in enumerate(run.rounds(rounds)):
                    t = targets[rt.name]
                    spent: list[float] = []
                    with cpu_of(t.watched(), spent):
                        took = transfer(t, i // len(run.runtimes))
                    rate.add(rt.name, mib / took)
                    cpu.add(rt.name, spent[0] * GIB / size)
            slow = {"exec stdout": slow_exec, "port-forward download": slow_forward}
            for kind, reader in slow.items():
                grew = run.metric(S9, f"daemon RSS growth, slow reader of {kind}", "MiB")
                for rt in run.runtimes:
                    grew.add(rt.name, reader(targets[rt.name]))
        finally:
            for t in targets.values():
                t.close()
