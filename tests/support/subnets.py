"""Test subnets that are unique on this host, across concurrent test processes.

A /24 is taken only if no address or route of the host overlaps it and its lock file
(/tmp/peapod-cni-test-<net>.lock, flock'ed) is free; ``SubnetLease.release`` gives it
back.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass


def busy_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks of the host's addresses and routes."""
    nets: list[ipaddress.IPv4Network] = []
    for what in ("addr", "route"):
        out = subprocess.run(
            ["ip", "-j", "-4", what], capture_output=True, text=True, check=True
        ).stdout
        for entry in json.loads(out or "[]"):
            if what == "addr":
                for addr in entry.get("addr_info", []):
                    nets.append(ipaddress.IPv4Network(
                        f"{addr['local']}/{addr['prefixlen']}", strict=False))
            else:
                dst = entry.get("dst", "")
                if dst and dst != "default":
                    nets.append(ipaddress.IPv4Network(
                        dst if "/" in dst else f"{dst}/32", strict=False))
    return nets


@dataclass
class SubnetLease:
    """A reserved subnet; hold it until ``release``."""

    network: ipaddress.IPv4Network
    _fd: int
    _path: str

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            os.close(self._fd)
            self._fd = -1


def reserve(candidates: Iterable[ipaddress.IPv4Network]) -> SubnetLease:
    """The first candidate not used on the host nor held by another test."""
    busy = busy_networks()
    for candidate in candidates:
        if any(candidate.overlaps(b) for b in busy):
            continue
        path = f"/tmp/peapod-cni-test-{candidate.network_address}.lock"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return SubnetLease(candidate, fd, path)
    raise RuntimeError("no free test /24 left")
