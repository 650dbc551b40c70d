"""Capability arguments (CNI conventions) and the ``runtimeConfig`` derived from them."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from base.errors import InvalidArgument
from base.text import shorten

PORT_MAPPINGS = "portMappings"
BANDWIDTH = "bandwidth"
IPS = "ips"
DNS = "dns"
CGROUP_PATH = "cgroupPath"
MAC = "mac"
IP_RANGES = "ipRanges"
ALIASES = "aliases"

# Burst the bandwidth plugin gets when only a rate is known (as CRI-O does).
DEFAULT_BURST = 2**31 - 1
_PROTOCOLS = ("tcp", "udp", "sctp")


def runtime_config_for(
    plugin: Mapping[str, Any], capability_args: Mapping[str, Any]
) -> dict[str, Any]:
    """The capability args this plugin declares (``capabilities: {name: true}``)."""
    declared = plugin.get("capabilities") or {}
    return {
        name: copy.deepcopy(value)
        for name, value in capability_args.items()
        if declared.get(name) is True
    }


@dataclass
class PortMapping:
    """One host port forwarded into the pod."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""


def port_mappings(mappings: Iterable[PortMapping]) -> list[dict[str, Any]]:
    """The ``portMappings`` capability value; entries without a host port are left out."""
    out: list[dict[str, Any]] = []
    for m in mappings:
        protocol = m.protocol.lower()
        if protocol not in _PROTOCOLS:
            raise InvalidArgument(
                f"port mapping protocol {shorten(m.protocol)} is not one of tcp, udp, sctp",
                reason="port_mapping")
        if m.host_port <= 0:
            continue
        if not (0 < m.host_port < 65536 and 0 < m.container_port < 65536):
            raise InvalidArgument(
                f"port mapping {m.host_port}->{m.container_port}/{protocol} has a port "
                "outside 1-65535", reason="port_mapping")
        entry: dict[str, Any] = {
            "hostPort": m.host_port,
            "containerPort": m.container_port,
            "protocol": protocol,
        }
        if m.host_ip:
            entry["hostIP"] = m.host_ip
        out.append(entry)
    return out


def bandwidth(
    ingress_rate: int | None = None,
    egress_rate: int | None = None,
    ingress_burst: int | None = None,
    egress_burst: int | None = None,
) -> dict[str, int]:
    """The ``bandwidth`` capability value (rates in bit/s, bursts in bits)."""
    out: dict[str, int] = {}
    for direction, rate, burst in (("ingress", ingress_rate, ingress_burst),
                                   ("egress", egress_rate, egress_burst)):
        if rate is None or rate <= 0:
            continue
        out[f"{direction}Rate"] = rate
        out[f"{direction}Burst"] = burst if burst and burst > 0 else DEFAULT_BURST
    return out
