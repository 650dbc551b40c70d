"""What the kubelet asks for in RunPodSandbox, as peapod's domain sees it.

The gRPC layer converts the protobuf ``PodSandboxConfig`` into a ``PodConfig``
and validates it; nothing here knows about protobuf.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from base.errors import InvalidArgument
from base.text import shorten
from cni.capabilities import PortMapping
from sandbox.idmappings import UserNamespaceMappings
from sandbox.pod_files import DnsConfig

# Pod-level namespace modes (CRI NamespaceMode names).
POD = "POD"
CONTAINER = "CONTAINER"
NODE = "NODE"

INGRESS_BANDWIDTH = "kubernetes.io/ingress-bandwidth"
EGRESS_BANDWIDTH = "kubernetes.io/egress-bandwidth"

# A Kubernetes quantity: number, then a binary or decimal SI suffix or an exponent.
_QUANTITY = re.compile(r"([+]?[0-9]+(?:\.[0-9]*)?|[+]?\.[0-9]+)([a-zA-Z]*|[eE][+-]?[0-9]+)")
_MAX_QUANTITY_LEN = 64
_MAX_EXPONENT = 30
# The kubelet's bounds on a bandwidth annotation (bit/s).
MIN_BANDWIDTH = 1000
MAX_BANDWIDTH = 10**15
_SUFFIXES = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


@dataclass(frozen=True)
class PodMetadata:
    """The kubelet's identity of a pod; (name, uid, namespace, attempt) is unique."""

    name: str
    uid: str
    namespace: str
    attempt: int = 0

    def sandbox_name(self) -> str:
        """The reserved name: ``k8s_<pod>_<namespace>_<uid>_<attempt>``."""
        return f"k8s_{self.name}_{self.namespace}_{self.uid}_{self.attempt}"


@dataclass(frozen=True)
class PodConfig:
    """A validated pod sandbox request.

    ``pid_mode`` is POD (containers share a PID namespace held by the infra
    process), CONTAINER (each container gets its own) or NODE (the host's).
    ``userns`` holds the mappings of a pod in its own user namespace (``hostUsers:
    false``), None for a pod in the host's. ``security``, ``overhead`` and
    ``resources`` are kept as given, for later use.
    """

    metadata: PodMetadata
    hostname: str = ""
    log_directory: str = ""
    dns: DnsConfig | None = None
    port_mappings: tuple[PortMapping, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    cgroup_parent: str = ""
    sysctls: Mapping[str, str] = field(default_factory=dict)
    host_network: bool = False
    host_ipc: bool = False
    pid_mode: str = POD
    userns: UserNamespaceMappings | None = None
    security: Mapping[str, Any] = field(default_factory=dict)
    overhead: Mapping[str, Any] = field(default_factory=dict)
    resources: Mapping[str, Any] = field(default_factory=dict)

    @property
    def host_pid(self) -> bool:
        return self.pid_mode == NODE

    def bandwidth(self) -> tuple[int | None, int | None]:
        """(ingress, egress) rates in bit/s from the pod's bandwidth annotations."""
        return (
            _rate(self.annotations, INGRESS_BANDWIDTH),
            _rate(self.annotations, EGRESS_BANDWIDTH),
        )


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity ("10M", "1Gi", "500k", "1e6") as a number.

    ValueError (with the text shortened) for anything else, exponents past 1e30 included.
    """
    match = _QUANTITY.fullmatch(text) if len(text) <= _MAX_QUANTITY_LEN else None
    if match is None:
        raise ValueError(f"{shorten(text)} is not a quantity such as 10M or 1Gi")
    number, suffix = match.groups()
    try:
        value = Decimal(number)
    except InvalidOperation:
        raise ValueError(f"{shorten(text)} is not a quantity") from None
    if suffix[:1] in ("e", "E") and suffix[1:].lstrip("+-").isdigit():
        exponent = int(suffix[1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise ValueError(f"{shorten(text)} is out of range")
        return value * Decimal(10) ** exponent
    if suffix not in _SUFFIXES:
        raise ValueError(f"{shorten(text)} has an unknown suffix {shorten(suffix)}")
    return value * _SUFFIXES[suffix]


def _rate(annotations: Mapping[str, str], key: str) -> int | None:
    text = annotations.get(key)
    if text is None:
        return None
    try:
        value = parse_quantity(text)
    except ValueError as exc:
        raise InvalidArgument(f"pod annotation {key}: {exc}") from None
    if not MIN_BANDWIDTH <= value <= MAX_BANDWIDTH:
        raise InvalidArgument(
            f"pod annotation {key}={shorten(text)} is outside 1k-1P bit/s, the kubelet's "
            "bounds for a bandwidth limit"
        )
    return int(value.to_integral_value(rounding="ROUND_CEILING"))
