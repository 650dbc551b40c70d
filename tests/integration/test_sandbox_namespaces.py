"""Pinning real network/IPC/UTS namespaces: isolation, persistence, sysctls, hostname, unpin."""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from base.errors import AlreadyExists, InvalidArgument
from sandbox import procs, sysctls
from sandbox.mounts import is_mountpoint, mount, umount_all
from sandbox.namespaces import KINDS, ns_inode, pin_namespaces, unpin

REPO = Path(__file__).resolve().parents[2]
MS_SHARED = 1 << 20


def _cleanup(ns_dir: Path) -> None:
    for kind in KINDS:
        umount_all(ns_dir / kind)
        (ns_dir / kind).unlink(missing_ok=True)


@pytest.fixture
def ns_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "ns"
    try:
        yield d
    finally:
        _cleanup(d)


def nsenter(paths: dict[str, Path], *cmd: str) -> str:
    args = [f"--{kind}={path}" for kind, path in paths.items()]
    return subprocess.run(
        ["nsenter", *args, "--", *cmd], check=True, capture_output=True, text=True
    ).stdout.strip()


def mounted_under(d: Path) -> list[str]:
    prefix = str(d) + "/"
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if line.split()[4].startswith(prefix)]


def processes_in_netns(inode: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "net").st_ino == inode:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_pinned_namespaces_are_isolated_and_outlive_their_processes(ns_dir: Path) -> None:
    paths = pin_namespaces(ns_dir, {"net", "ipc", "uts"})
    assert set(paths) == {"net", "ipc", "uts"}
    for kind, path in paths.items():
        assert path == ns_dir / kind and is_mountpoint(path)
        host = os.readlink(f"/proc/self/ns/{kind}")
        first = nsenter({kind: path}, "readlink", f"/proc/self/ns/{kind}")
        second = nsenter({kind: path}, "readlink", f"/proc/self/ns/{kind}")
        assert first == second == f"{kind}:[{ns_inode(path)}]"
        assert first != host
    # Nothing runs in the network namespace; the bind mount alone keeps it.
    assert processes_in_netns(ns_inode(paths["net"])) == []


def test_loopback_is_up_and_only_interface(ns_dir: Path) -> None:
    paths = pin_namespaces(ns_dir, {"net"})
    out = nsenter(paths, "ip", "-o", "link", "show")
    assert len(out.splitlines()) == 1
    assert "lo:" in out and ",UP" in out
    addrs = nsenter(paths, "ip", "-o", "addr", "show", "dev", "lo")
    assert "inet 127.0.0.1/8" in addrs


def own_namespaces() -> dict[str, str]:
    """The calling thread's net, IPC and UTS namespaces."""
    return {kind: os.readlink(f"/proc/thread-self/ns/{kind}") for kind in KINDS}


def strays(host: dict[str, str]) -> list[str]:
    """This process's threads (tid:namespace) in a net, IPC or UTS namespace not the host's."""
    found = []
    for task in Path("/proc/self/task").iterdir():
        for kind in KINDS:
            try:
                link = os.readlink(task / "ns" / kind)
            except OSError:
                continue  # the thread exited meanwhile
            if link != host[kind]:
                found.append(f"{task.name}:{link}")
    return found


def test_no_thread_of_the_daemon_stays_in_a_pods_namespaces(ns_dir: Path) -> None:
    """The namespaces are made on a thread of its own, which exits; the caller's thread,
    and every other, stays in the host's namespaces, after a failure too."""
    host = own_namespaces()
    paths = pin_namespaces(ns_dir, {"net", "ipc", "uts"}, hostname="pod-t",
                           sysctls={"net.ipv4.ip_unprivileged_port_start": "81"})
    assert own_namespaces() == host
    assert all(f"{kind}:[{ns_inode(path)}]" != host[kind] for kind, path in paths.items())
    assert procs.wait_until(lambda: not strays(host), 5), strays(host)
    assert socket.gethostname() != "pod-t"
    with pytest.raises(InvalidArgument, match="ip_forward"):
        pin_namespaces(ns_dir.parent / "failed", {"net", "ipc", "uts"}, hostname="pod-f",
                       sysctls={"net.ipv4.ip_forward": "not-a-number"})
    assert own_namespaces() == host
    assert procs.wait_until(lambda: not strays(host), 5), strays(host)
    assert mounted_under(ns_dir.parent / "failed") == []


def test_pods_pinned_in_parallel_from_a_pool_each_get_their_own(tmp_path: Path) -> None:
    """Eight pool threads pin 24 pods at once: distinct namespaces, each with its own
    hostname and sysctl, and the pool's threads (reused for the next pod) stay in the
    host's namespaces throughout."""
    host = own_namespaces()
    seen_by_workers: list[dict[str, str]] = []
    dirs = [tmp_path / f"pod{i}" / "ns" for i in range(24)]

    def pin(i: int) -> dict[str, Path]:
        seen_by_workers.append(own_namespaces())
        got = pin_namespaces(dirs[i], {"net", "ipc", "uts"}, hostname=f"pod-{i}",
                             sysctls={"net.ipv4.ip_unprivileged_port_start": str(100 + i)})
        seen_by_workers.append(own_namespaces())
        return got

    try:
        with ThreadPoolExecutor(8) as pool:
            pinned = list(pool.map(pin, range(24)))
        assert all(seen == host for seen in seen_by_workers)
        inodes = {ns_inode(p) for paths in pinned for p in paths.values()}
        assert len(inodes) == 24 * 3
        for i, paths in enumerate(pinned):
            out = nsenter(paths, "sh", "-c",
                          "hostname; cat /proc/sys/net/ipv4/ip_unprivileged_port_start")
            assert out.split() == [f"pod-{i}", str(100 + i)]
    finally:
        for d in dirs:
            _cleanup(d)
    assert all(d.parent.exists() and mounted_under(d.parent) == [] for d in dirs)


def test_hostname_and_sysctls_inside_only(ns_dir: Path) -> None:
    wanted = {
        "net.ipv4.ping_group_range": "0\t2147483647",
        "net/ipv4/ip_unprivileged_port_start": "80",
        "kernel.shmmni": "8192",
        "fs.mqueue.msg_max": "20",
    }
    files = {
        "net.ipv4.ping_group_range": "/proc/sys/net/ipv4/ping_group_range",
        "net/ipv4/ip_unprivileged_port_start": "/proc/sys/net/ipv4/ip_unprivileged_port_start",
        "kernel.shmmni": "/proc/sys/kernel/shmmni",
        "fs.mqueue.msg_max": "/proc/sys/fs/mqueue/msg_max",
    }
    host_before = {k: Path(f).read_text().strip() for k, f in files.items()}
    assert all(host_before[k] != v for k, v in wanted.items()), "pick values the host lacks"
    host_name = socket.gethostname()

    paths = pin_namespaces(ns_dir, {"net", "ipc", "uts"}, hostname="pod-a", sysctls=wanted)

    script = "hostname; " + "; ".join(f"cat {f}" for f in files.values())
    out = nsenter(paths, "sh", "-c", script).splitlines()
    assert out == ["pod-a", *wanted.values()]
    assert {k: Path(f).read_text().strip() for k, f in files.items()} == host_before
    assert socket.gethostname() == host_name


@pytest.mark.parametrize(
    ("kinds", "sysctls"),
    [
        ({"net", "ipc", "uts"}, {"kernel.pid_max": "4194304"}),
        ({"net", "ipc", "uts"}, {"vm.swappiness": "10"}),
        ({"net", "ipc", "uts"}, {"net.ipv4.not_a_real_sysctl": "1"}),
        ({"ipc", "uts"}, {"net.ipv4.ip_forward": "1"}),  # host network
        ({"net", "uts"}, {"kernel.shmmni": "8192"}),  # host IPC
    ],
)
def test_invalid_sysctls_rejected_before_anything_exists(
    ns_dir: Path, kinds: set[str], sysctls: dict[str, str]
) -> None:
    with pytest.raises(InvalidArgument) as info:
        pin_namespaces(ns_dir, kinds, hostname="pod-a", sysctls=sysctls)
    assert next(iter(sysctls)) in info.value.message
    assert not ns_dir.exists()


@pytest.mark.parametrize(
    "sysctls",
    [
        {"net.ipv4.ip_forward": "not-a-number"},  # the kernel rejects the value
        {"net.core.rmem_max": "1048576"},  # exists on the host, read-only in a child netns
    ],
)
def test_sysctl_refused_inside_is_reported_and_cleaned_up(
    ns_dir: Path, sysctls: dict[str, str]
) -> None:
    with pytest.raises(InvalidArgument) as info:
        pin_namespaces(ns_dir, {"net", "ipc", "uts"}, sysctls=sysctls)
    assert next(iter(sysctls)) in info.value.message
    assert mounted_under(ns_dir) == []
    assert list(ns_dir.iterdir()) == []


def test_hostname_needs_uts_and_is_validated(ns_dir: Path) -> None:
    with pytest.raises(InvalidArgument):
        pin_namespaces(ns_dir, {"net"}, hostname="pod-a")
    with pytest.raises(InvalidArgument):
        pin_namespaces(ns_dir, {"uts"}, hostname="bad host")
    assert not ns_dir.exists()


def test_pinning_twice_is_refused(ns_dir: Path) -> None:
    paths = pin_namespaces(ns_dir, {"net"})
    inode = ns_inode(paths["net"])
    with pytest.raises(AlreadyExists):
        pin_namespaces(ns_dir, {"net"})
    assert ns_inode(paths["net"]) == inode


def test_unpin_from_another_process_leaves_nothing(ns_dir: Path) -> None:
    paths = pin_namespaces(ns_dir, {"net", "ipc", "uts"}, hostname="pod-a")
    assert len(mounted_under(ns_dir)) == 3
    # A restarted daemon only has the paths.
    code = f"from sandbox.namespaces import unpin; unpin({[str(p) for p in paths.values()]!r})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    assert mounted_under(ns_dir) == []
    assert list(ns_dir.iterdir()) == []
    unpin(paths)  # idempotent


def test_pin_under_a_shared_mount(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    mount("tmpfs", shared, "tmpfs", 0, "size=1m")
    try:
        mount("none", shared, None, MS_SHARED, None)
        paths = pin_namespaces(shared / "ns", {"net", "uts"}, hostname="pod-s")
        assert nsenter(paths, "hostname") == "pod-s"
        unpin(paths)
        assert mounted_under(shared) == []
    finally:
        _cleanup(shared / "ns")
        umount_all(shared)


def test_pin_time_for_one_pod(tmp_path: Path) -> None:
    """Pin net+ipc+uts with a hostname and two sysctls; report the median time."""
    samples = []
    for i in range(15):
        d = tmp_path / f"pod{i}"
        try:
            start = time.perf_counter()
            pin_namespaces(
                d,
                {"net", "ipc", "uts"},
                hostname=f"pod-{i}",
                sysctls={"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shmmni": "8192"},
            )
            samples.append(time.perf_counter() - start)
        finally:
            _cleanup(d)
    median = statistics.median(samples)
    print(
        f"\npin net+ipc+uts+hostname+2 sysctls: median {median * 1000:.1f} ms, "
        f"min {min(samples) * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms"
    )
    assert median < 0.5


def test_apply_sysctls_into_pinned_namespaces(ns_dir: Path) -> None:
    paths = pin_namespaces(ns_dir, {"net", "ipc"})
    parsed = sysctls.validate(
        {"net.ipv4.ip_unprivileged_port_start": "443", "kernel.msgmax": "16384"}, False, False
    )
    sysctls.apply(parsed, paths)
    out = nsenter(
        paths,
        "cat",
        "/proc/sys/net/ipv4/ip_unprivileged_port_start",
        "/proc/sys/kernel/msgmax",
    )
    assert out.split() == ["443", "16384"]
    with pytest.raises(InvalidArgument, match="ip_forward"):
        sysctls.apply(sysctls.validate({"net.ipv4.ip_forward": "x"}, False, False), paths)
    with pytest.raises(InvalidArgument, match="own ipc namespace"):
        sysctls.apply(parsed, {"net": paths["net"]})
