"""Per-interface counters of a pod's network namespace, from ``net/dev``, without forking.

``/proc/<pid>/net/dev`` shows the namespace of ``pid``: a process of the pod (a running
container's, or its infra process) is used when its ``ns/net`` is the pod's pinned
namespace (same nsfs inode), which costs two stats and one read. Without such a process
a short-lived thread enters the namespace (setns on the pinned file) and reads
``/proc/thread-self/net/dev``; the daemon's own threads never change namespace.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from oci.stats.cgroups import read_text

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class InterfaceCounters:
    """One interface's cumulative counters, as ``net/dev`` has them."""

    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str) -> list[InterfaceCounters]:
    """Every interface of a ``net/dev`` file (two header lines, then ``name: 16 numbers``)."""
    out = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        fields = rest.split()
        if not sep or len(fields) < 16 or not all(f.isdigit() for f in fields[:12]):
            continue
        n = [int(f) for f in fields[:12]]
        out.append(InterfaceCounters(
            name=name.strip(), rx_bytes=n[0], rx_packets=n[1], rx_errors=n[2],
            rx_dropped=n[3], tx_bytes=n[8], tx_packets=n[9], tx_errors=n[10],
            tx_dropped=n[11],
        ))  # fmt: skip
    return out


def netns_counters(netns_path: str, pids: Iterable[int] = ()) -> list[InterfaceCounters] | None:
    """Counters of the namespace pinned at ``netns_path``; None if it cannot be read."""
    try:
        pinned = os.stat(netns_path)
    except OSError:
        return None
    for pid in pids:
        try:
            own = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (own.st_dev, own.st_ino) != (pinned.st_dev, pinned.st_ino):
            continue
        text = read_text(f"/proc/{pid}/net/dev")
        if text is not None:
            return parse_net_dev(text)
    return _read_in_namespace(netns_path)


def _read_in_namespace(netns_path: str) -> list[InterfaceCounters] | None:
    result: list[str | None] = []

    def work() -> None:
        text = None
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) == 0:
                    text = read_text("/proc/thread-self/net/dev")
            finally:
                os.close(fd)
        except OSError:
            pass
        result.append(text)

    t = threading.Thread(target=work, name="netns-stats", daemon=True)
    t.start()
    t.join()
    text = result[0] if result else None
    return parse_net_dev(text) if text is not None else None
