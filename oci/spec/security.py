"""Security settings of a container: capabilities, masked and read-only paths, seccomp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from base.errors import InvalidArgument
from oci.spec.capabilities import container_capabilities
from oci.spec.inputs import DaemonFacts, SecurityContext
from oci.spec.mounts import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS
from oci.spec.seccomp import container_seccomp


@dataclass(frozen=True)
class SecuritySettings:
    """The security-related pieces of a spec, computed together."""

    capabilities: list[str]
    masked_paths: list[str]
    readonly_paths: list[str]
    seccomp: dict[str, Any] | None


def _paths(given: tuple[str, ...] | None, defaults: tuple[str, ...], what: str) -> list[str]:
    paths = list(defaults if given is None else given)
    for path in paths:
        if not path.startswith("/"):
            raise InvalidArgument(f"{what} entry {path!r} must be an absolute path")
    return paths


def security_settings(security: SecurityContext, daemon: DaemonFacts) -> SecuritySettings:
    """Capabilities, masked/read-only paths and the seccomp filter for the request.

    Privileged containers get every capability peapod holds, nothing masked or made
    read-only, and no seccomp filter.
    """
    caps = container_capabilities(
        security.capabilities.add,
        security.capabilities.drop,
        privileged=security.privileged,
        defaults=daemon.default_capabilities,
        bounding=daemon.bounding_set,
    )
    if security.privileged:
        masked: list[str] = []
        readonly: list[str] = []
    else:
        masked = _paths(security.masked_paths, DEFAULT_MASKED_PATHS, "masked_paths")
        readonly = _paths(security.readonly_paths, DEFAULT_READONLY_PATHS, "readonly_paths")
    seccomp = container_seccomp(
        security.seccomp, privileged=security.privileged, caps=caps, daemon=daemon
    )
    return SecuritySettings(caps, masked, readonly, seccomp)
