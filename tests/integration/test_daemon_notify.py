"""systemd's notify protocol against the real daemon, heard on a socket the test binds.

READY=1 only once the CRI socket answers Version; STOPPING=1 on SIGTERM; WATCHDOG=1
every WATCHDOG_USEC/2 while the server answers, and none while it does not; the
processes the daemon starts never see NOTIFY_SOCKET.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.daemon import REPO, Peapod
from support.pods import PodEnv

from api import api_pb2 as pb


class Listener:
    """An AF_UNIX datagram socket playing systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.address = address  # what NOTIFY_SOCKET says
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)

    def receive(self, timeout: float) -> tuple[float, dict[str, str]] | None:
        """The next message and when it arrived, or None after ``timeout`` seconds."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
        return time.monotonic(), fields

    def collect(self, seconds: float) -> list[tuple[float, dict[str, str]]]:
        out = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            got = self.receive(left)
            if got is not None:
                out.append(got)
        return out

    def close(self) -> None:
        self.sock.close()
        if not self.address.startswith("@"):
            Path(self.address).unlink(missing_ok=True)


def spawn(peapod: Peapod, notify: str, watchdog_usec: int = 0) -> None:
    """Start the daemon with systemd's variables, without waiting for it."""
    env = {**os.environ, **peapod.env, "NOTIFY_SOCKET": notify}
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    with peapod.log_path.open("ab") as log:
        peapod.proc = subprocess.Popen(peapod.command(), cwd=REPO, stdout=log, stderr=log,
                                       stdin=subprocess.DEVNULL, env=env)  # fmt: skip


def answers_version(peapod: Peapod) -> bool:
    try:
        peapod.runtime.Version(pb.VersionRequest(), timeout=1, wait_for_ready=False)
    except grpc.RpcError:
        return False
    return True


@pytest.fixture
def peapod() -> Iterator[Peapod]:
    daemon = Peapod()
    try:
        yield daemon
    finally:
        daemon.cleanup()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_once_version_answers_then_stopping_on_sigterm(
    peapod: Peapod, abstract: bool
) -> None:
    address = (f"@peapod-test-{secrets.token_hex(4)}" if abstract
               else str(peapod.base / "notify.sock"))  # fmt: skip
    listener = Listener(address)
    try:
        spawn(peapod, address)
        got = listener.receive(30)
        assert got is not None, f"no notification:\n{peapod.log_tail()}"
        _, first = got
        assert first["READY"] == "1", first
        assert first["MAINPID"] == str(peapod.proc.pid if peapod.proc else -1)
        # READY=1 certifies the socket already answers, with no retry or wait.
        assert answers_version(peapod)
        assert listener.receive(0.5) is None  # no watchdog was asked for
        assert peapod.proc is not None
        peapod.proc.send_signal(signal.SIGTERM)
        got = listener.receive(30)
        assert got is not None and got[1].get("STOPPING") == "1", got
        assert peapod.proc.wait(30) == 0
        assert not peapod.socket.exists()
    finally:
        listener.close()


def test_watchdog_pings_at_half_the_interval_only_while_the_server_answers(
    peapod: Peapod,
) -> None:
    # One worker: a RunPodSandbox waiting for a network config holds it, so the
    # daemon's own Version check cannot get through.
    (peapod.config_dir / "50-one-worker.yaml").write_text(
        "grpc_workers: 1\nnetwork: {wait_for_config: 3.0}\n"
    )
    listener = Listener(str(peapod.base / "notify.sock"))
    try:
        spawn(peapod, listener.address, watchdog_usec=1_000_000)
        got = listener.receive(30)
        assert got is not None and got[1].get("READY") == "1", got
        window = 3.0
        pings = [at for at, msg in listener.collect(window) if msg.get("WATCHDOG") == "1"]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        # every 0.5 s: never slower than systemd's 1 s deadline, never faster than the rate
        assert len(pings) <= window / 0.5 + 1, gaps
        assert len(pings) >= 4 and max(gaps) < 1.0, gaps

        heard: list[tuple[float, dict[str, str]]] = []
        receiver = threading.Thread(target=lambda: heard.extend(listener.collect(5.0)))
        receiver.start()
        blocked_at = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(
                name="waits", uid=secrets.token_hex(4), namespace="test"))  # fmt: skip
            peapod.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=30)
        freed_at = time.monotonic()
        receiver.join()
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert freed_at - blocked_at > 2.5
        pings = [at for at, msg in heard if msg.get("WATCHDOG") == "1"]
        # A check already under way when the worker was taken may still ping.
        assert [at for at in pings if blocked_at + 0.5 < at < freed_at] == [], pings
        after = [at for at in pings if at >= freed_at]
        assert after and after[0] - freed_at < 1.0, "pings did not resume once the worker was free"
    finally:
        listener.close()


def test_processes_the_daemon_starts_do_not_see_notify_socket() -> None:
    env = PodEnv(network=False)
    listener = Listener(str(env.peapod.base / "notify.sock"))
    try:
        spawn(env.peapod, listener.address, watchdog_usec=30_000_000)
        got = listener.receive(30)
        assert got is not None and got[1].get("READY") == "1", got
        pod = env.run(env.config(host_network=True))  # pid namespace POD: an infra process
        info = env.info(pod)
        infra = info["infra"]
        for pid in (infra["pid"], infra["parent_pid"]):
            names = {entry.split(b"=", 1)[0] for entry in
                     Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if entry}  # fmt: skip
            assert b"PATH" in names  # the environment is there, without systemd's variables
            assert not names & {b"NOTIFY_SOCKET", b"WATCHDOG_USEC", b"WATCHDOG_PID"}, pid
        env.remove(pod)
    finally:
        with contextlib.suppress(Exception):
            env.sweep()
        listener.close()
