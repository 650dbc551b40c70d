"""Per-attachment parameters: container id, netns, ifname, CNI_ARGS, capability args."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from base.errors import InvalidArgument
from base.text import shorten

# Spec: container ids start alphanumeric, then alphanumerics, '_', '.', '-'.
_CONTAINER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_MAX_IFNAME = 15


@dataclass
class RuntimeConf:
    """What the runtime supplies for one attachment of a network to a pod."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: list[tuple[str, str]] = field(default_factory=list)  # CNI_ARGS pairs, in order
    capability_args: dict[str, Any] = field(default_factory=dict)  # e.g. portMappings

    def validate(self) -> None:
        """Raise InvalidArgument if a field breaks the spec's rules."""
        if not _CONTAINER_ID_RE.match(self.container_id):
            raise InvalidArgument(
                f"CNI container id {shorten(self.container_id)} must start with a letter or "
                "digit and hold only letters, digits, '_', '.' and '-'", reason="runtime_conf")
        name = self.ifname
        if (not name or name in (".", "..") or len(name) > _MAX_IFNAME
                or any(c in name for c in "/:") or any(c.isspace() for c in name)):
            raise InvalidArgument(
                f"interface name {shorten(name)} must be 1-15 characters, not '.' or '..', "
                "without '/', ':' or whitespace", reason="runtime_conf")
        for key, value in self.args:
            if not key or any(c in key + value for c in ";=") or "\0" in key + value:
                raise InvalidArgument(
                    f"CNI_ARGS pair {shorten(key)}={shorten(value)} must have a non-empty key "
                    "and no ';' or '=' in key or value", reason="runtime_conf")

    def cni_args(self) -> str:
        """The CNI_ARGS value: "K=V;K2=V2"."""
        return ";".join(f"{k}={v}" for k, v in self.args)

    def to_dict(self) -> dict[str, Any]:
        return {
            "containerID": self.container_id,
            "netns": self.netns,
            "ifname": self.ifname,
            "args": [[k, v] for k, v in self.args],
            "capabilityArgs": copy.deepcopy(self.capability_args),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeConf:
        """Rebuild from ``to_dict`` output (KeyError/TypeError/ValueError if malformed)."""
        return cls(
            container_id=str(data["containerID"]),
            netns=str(data["netns"]),
            ifname=str(data["ifname"]),
            args=[(str(k), str(v)) for k, v in data.get("args", [])],
            capability_args=dict(data.get("capabilityArgs", {})),
        )


def k8s_args(namespace: str, name: str, infra_container_id: str, uid: str) -> list[tuple[str, str]]:
    """The CNI_ARGS pairs Kubernetes runtimes pass for a pod."""
    return [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", namespace),
        ("K8S_POD_NAME", name),
        ("K8S_POD_INFRA_CONTAINER_ID", infra_container_id),
        ("K8S_POD_UID", uid),
    ]
