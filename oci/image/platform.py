"""The platform (os/architecture/variant) this host runs, and matching against it.

Architecture names follow the OCI image-spec (Go's GOARCH values). Variants are
normalised so that ``arm64`` means ``arm64/v8`` and ``armhf``-style names map to
``arm/v7``. An ``arm/v7`` host can also run ``v6`` and ``v5`` images.
"""

from __future__ import annotations

import platform as _stdlib_platform
from dataclasses import dataclass
from typing import Any

# uname machine (and common distro names) -> (OCI architecture, variant)
_MACHINE = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "x86-64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "arm64": ("arm64", "v8"),
    "armv8l": ("arm", "v7"),
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armhf": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armel": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "armv5l": ("arm", "v5"),
    "i386": ("386", ""),
    "i486": ("386", ""),
    "i586": ("386", ""),
    "i686": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "mips64": ("mips64", ""),
    "mips64el": ("mips64le", ""),
    "loongarch64": ("loong64", ""),
}

# Which variants a host variant can run, best first.
_ARM_COMPATIBLE = {
    "v8": ["v8", "v7", "v6", "v5"],
    "v7": ["v7", "v6", "v5"],
    "v6": ["v6", "v5"],
    "v5": ["v5"],
}


def normalize(os: str, architecture: str, variant: str = "") -> Platform:
    """A Platform with canonical names (``aarch64`` → ``arm64/v8``, ``7`` → ``v7``...)."""
    os = os.lower()
    arch = architecture.lower()
    var = variant.lower()
    if var and var[0].isdigit():
        var = f"v{var}"
    if arch in _MACHINE:
        arch, default_variant = _MACHINE[arch]
        var = var or default_variant
    if arch == "amd64" and var == "v1":
        var = ""
    return Platform(os, arch, var)


@dataclass(frozen=True)
class Platform:
    """An OCI platform: ``os/architecture[/variant]``."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        parts = [self.os, self.architecture]
        if self.variant:
            parts.append(self.variant)
        return "/".join(parts)

    @classmethod
    def from_json(cls, data: Any) -> Platform:
        """Build from an image-spec ``platform`` object (fields already validated as strings)."""
        return cls(
            str(data.get("os", "")),
            str(data.get("architecture", "")),
            str(data.get("variant", "") or ""),
        )

    def rank(self, candidate: Platform) -> int | None:
        """How well ``candidate`` fits this (host) platform: 0 is best, None means it cannot run.

        A candidate without a variant fits any variant of its architecture, after the
        explicit matches.
        """
        host = normalize(self.os, self.architecture, self.variant)
        cand = normalize(candidate.os, candidate.architecture, candidate.variant)
        if cand.os != host.os or cand.architecture != host.architecture:
            return None
        if host.architecture == "arm":
            order = _ARM_COMPATIBLE.get(host.variant, [host.variant])
            if cand.variant in order:
                return order.index(cand.variant)
            return len(order) if not cand.variant else None
        if cand.variant == host.variant:
            return 0
        return 1 if not cand.variant else None

    def matches(self, candidate: Platform) -> bool:
        """Whether an image built for ``candidate`` can run on this platform."""
        return self.rank(candidate) is not None


def from_machine(machine: str, os: str = "linux") -> Platform:
    """The platform for a ``uname -m`` value (unknown values pass through lowercased)."""
    arch, variant = _MACHINE.get(machine.lower(), (machine.lower(), ""))
    return Platform(os, arch, variant)


def host_platform() -> Platform:
    """This host's platform, e.g. ``linux/amd64`` or ``linux/arm64/v8``."""
    return from_machine(_stdlib_platform.machine())
