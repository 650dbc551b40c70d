"""A pod's network counters, read from its network namespace without forking.

The kernel's per-interface counters (``net/dev``) are read as a process of that
namespace sees them: ``/proc/<pid>/net/dev`` of a process known to be in it (its
``ns/net`` is the pod's pinned namespace file, checked through one open ``/proc/<pid>``
directory so a reused pid cannot slip in), else from a short-lived thread that
``setns()``es into each pinned namespace in turn and reads ``/proc/thread-self/net/dev``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sandbox.netns_dial import enter_netns

LOOPBACK = "lo"
DEFAULT_INTERFACE = "eth0"


@dataclass(frozen=True)
class InterfaceUsage:
    """One interface's cumulative counters (bytes and packets)."""

    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str) -> list[InterfaceUsage]:
    """The interfaces of a ``net/dev`` file, in the kernel's order; malformed lines skipped.

    Each line is ``name: rx bytes packets errs drop fifo frame compressed multicast``
    then ``tx bytes packets errs drop fifo colls carrier compressed``.
    """
    out = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 16:
            continue
        try:
            n = [int(f) for f in fields[:16]]
        except ValueError:
            continue
        out.append(InterfaceUsage(name.strip(), n[0], n[1], n[2], n[3], n[8], n[9], n[10], n[11]))
    return out


def split_default(
    interfaces: Iterable[InterfaceUsage],
) -> tuple[InterfaceUsage | None, list[InterfaceUsage]]:
    """(default interface, the others): ``lo`` left out; the default is ``eth0``, else the
    first other interface; it is not repeated among the others."""
    found = [i for i in interfaces if i.name != LOOPBACK]
    default = next((i for i in found if i.name == DEFAULT_INTERFACE), found[0] if found else None)
    return default, [i for i in found if i is not default]


def _ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def read_via_process(pid: int, netns_path: str) -> str | None:
    """``net/dev`` as process ``pid`` sees it, if that process is in ``netns_path``'s
    namespace; None otherwise (gone, elsewhere, or the namespace file is gone)."""
    want = _ns_inode(netns_path)
    if want is None or pid <= 0:
        return None
    try:
        dirfd = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.stat("ns/net", dir_fd=dirfd).st_ino != want:
            return None
        fd = os.open("net/dev", os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
        try:
            return _read_all(fd)
        finally:
            os.close(fd)
    except OSError:
        return None
    finally:
        os.close(dirfd)


def read_via_setns(netns_paths: Iterable[str]) -> dict[str, str]:
    """``net/dev`` of each pinned namespace, read by one thread that enters them in turn;
    namespaces that cannot be entered or read are left out."""
    paths = list(dict.fromkeys(netns_paths))
    found: dict[str, str] = {}
    if not paths:
        return found

    def work() -> None:
        for path in paths:
            try:
                enter_netns(path)
                fd = os.open("/proc/thread-self/net/dev", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    found[path] = _read_all(fd)
                finally:
                    os.close(fd)
            except Exception:  # a namespace removed meanwhile: no figures for it
                continue

    t = threading.Thread(target=work, name="stats-netns", daemon=True)
    t.start()
    t.join()
    return found


def read_pods(pods: Mapping[str, tuple[str, Iterable[int]]]) -> dict[str, list[InterfaceUsage]]:
    """Interfaces of each pod: ``pods`` maps a pod id to (pinned netns path, pids that may
    be in it). A pod whose pids all fail is read through ``read_via_setns``."""
    texts: dict[str, str] = {}
    fallback: dict[str, str] = {}
    for pod_id, (netns, pids) in pods.items():
        for pid in pids:
            text = read_via_process(pid, netns)
            if text is not None:
                texts[pod_id] = text
                break
        else:
            fallback[pod_id] = netns
    if fallback:
        by_path = read_via_setns(fallback.values())
        texts.update({p: by_path[ns] for p, ns in fallback.items() if ns in by_path})
    return {pod_id: parse_net_dev(text) for pod_id, text in texts.items()}


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("ascii", "replace")
