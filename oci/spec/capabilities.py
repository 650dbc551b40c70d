"""Linux capability sets for a container: names, the daemon's bounding set, add/drop rules.

A container can never hold a capability the daemon itself lacks: runc would fail to
start it. Every computed set is therefore intersected with the daemon's bounding set,
and each capability dropped for that reason is logged once per daemon lifetime.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from base.errors import InvalidArgument
from base.text import shorten

log = logging.getLogger(__name__)

# Capability numbers as defined by the kernel (include/uapi/linux/capability.h).
CAPABILITY_NUMBERS: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}
ALL_CAPABILITIES: frozenset[str] = frozenset(CAPABILITY_NUMBERS)

# The capabilities a container gets when it asks for nothing (CRI-O's default list).
DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_KILL",
)

_already_warned: set[str] = set()


def normalize(name: str) -> str:
    """Return the canonical ``CAP_X`` spelling of a capability name given in any case.

    "ALL" is returned as "ALL". Unknown names raise InvalidArgument.
    """
    upper = name.strip().upper()
    if upper == "ALL":
        return "ALL"
    canonical = upper if upper.startswith("CAP_") else "CAP_" + upper
    if canonical not in CAPABILITY_NUMBERS:
        raise InvalidArgument(
            f"unknown capability {shorten(name)}: use a Linux capability name such as NET_ADMIN "
            "or CAP_NET_ADMIN, or ALL"
        )
    return canonical


def parse_cap_mask(hex_mask: str) -> frozenset[str]:
    """Capability names set in a hexadecimal mask as printed in /proc/<pid>/status."""
    mask = int(hex_mask, 16)
    return frozenset(name for name, bit in CAPABILITY_NUMBERS.items() if mask >> bit & 1)


def read_bounding_set(status_path: str = "/proc/self/status") -> frozenset[str]:
    """The calling process's capability bounding set (the ``CapBnd`` line)."""
    with open(status_path, encoding="ascii") as status:
        for line in status:
            if line.startswith("CapBnd:"):
                return parse_cap_mask(line.split(":", 1)[1].strip())
    raise RuntimeError(f"{status_path} has no CapBnd line")


def limit_to_bounding(caps: Iterable[str], bounding: frozenset[str]) -> list[str]:
    """Keep only capabilities in ``bounding``, in kernel order; log each one dropped once."""
    wanted = set(caps)
    for name in sorted(wanted - bounding):
        if name not in _already_warned:
            _already_warned.add(name)
            log.warning(
                "capability %s is not in peapod's own bounding set; containers will not get it",
                name,
            )
    return sorted(wanted & bounding, key=CAPABILITY_NUMBERS.__getitem__)


def container_capabilities(
    add: Iterable[str],
    drop: Iterable[str],
    *,
    privileged: bool,
    defaults: Iterable[str],
    bounding: frozenset[str],
) -> list[str]:
    """The container's capability set, in kernel order.

    Privileged containers get every capability the daemon holds. Otherwise start from
    ``defaults``; "ALL" in ``add`` grants everything and "ALL" in ``drop`` removes
    everything, both before the named adds and drops are applied, and a name both added
    and dropped ends up dropped. The result never exceeds ``bounding``.
    """
    if privileged:
        return limit_to_bounding(bounding, bounding)
    adds = [normalize(name) for name in add]
    drops = [normalize(name) for name in drop]
    caps = {normalize(name) for name in defaults}
    if "ALL" in adds:
        caps |= bounding & ALL_CAPABILITIES
    if "ALL" in drops:
        caps.clear()
    caps |= {name for name in adds if name != "ALL"}
    caps -= {name for name in drops if name != "ALL"}
    return limit_to_bounding(caps, bounding)


def process_capabilities(caps: list[str]) -> dict[str, list[str]]:
    """The OCI ``process.capabilities`` object: inheritable and ambient stay empty."""
    return {
        "bounding": list(caps),
        "effective": list(caps),
        "permitted": list(caps),
        "inheritable": [],
        "ambient": [],
    }
