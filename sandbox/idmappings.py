"""A pod's user namespace mappings: the id ranges it gets, checked before anything is made.

The kubelet picks the host range of a ``hostUsers: false`` pod and sends it as one
uid and one gid mapping (container id 0, host id, length); peapod uses exactly
those and allocates nothing itself. ``check_mappings`` refuses what the kernel or
the CRI would: no mapping or more than one, container id 0 unmapped, an empty
range, a range reaching past the 32-bit id space (id 4294967295 is "no id" to the
kernel), overlapping ranges, and a host range holding host root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from base.errors import InvalidArgument

# The kernel's ids are 32-bit and (uid_t)-1 means "none": a range must end below it.
ID_LIMIT = 2**32 - 1


@dataclass(frozen=True)
class IdMapping:
    """``length`` ids from ``container_id`` inside the namespace onto ``host_id`` outside."""

    container_id: int
    host_id: int
    length: int

    def host_of(self, inner: int) -> int | None:
        """The host id of container id ``inner``, or None if this range does not hold it."""
        if self.container_id <= inner < self.container_id + self.length:
            return self.host_id + inner - self.container_id
        return None

    def line(self) -> str:
        """This mapping as a line of /proc/<pid>/uid_map."""
        return f"{self.container_id} {self.host_id} {self.length}\n"

    def to_oci(self) -> dict[str, int]:
        """The OCI runtime spec's LinuxIDMapping."""
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.length}


@dataclass(frozen=True)
class UserNamespaceMappings:
    """The uid and gid mappings of one pod's user namespace."""

    uids: tuple[IdMapping, ...]
    gids: tuple[IdMapping, ...]

    @property
    def root_uid(self) -> int:
        """The host uid of the pod's root (container uid 0)."""
        return _host_of(self.uids, 0)

    @property
    def root_gid(self) -> int:
        """The host gid of the pod's root group (container gid 0)."""
        return _host_of(self.gids, 0)

    def uid_map(self) -> str:
        return "".join(m.line() for m in self.uids)

    def gid_map(self) -> str:
        return "".join(m.line() for m in self.gids)

    def to_record(self) -> dict[str, list[list[int]]]:
        """A JSON-able form; ``from_record`` reads it back."""
        def rows(ms: tuple[IdMapping, ...]) -> list[list[int]]:
            return [[m.container_id, m.host_id, m.length] for m in ms]

        return {"uids": rows(self.uids), "gids": rows(self.gids)}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> UserNamespaceMappings:
        def maps(rows: list[list[int]]) -> tuple[IdMapping, ...]:
            return tuple(IdMapping(int(c), int(h), int(n)) for c, h, n in rows)

        return cls(uids=maps(data["uids"]), gids=maps(data["gids"]))


def _host_of(mappings: tuple[IdMapping, ...], inner: int) -> int:
    for m in mappings:
        host = m.host_of(inner)
        if host is not None:
            return host
    raise InvalidArgument("container id 0 is not mapped")  # check_mappings prevents this


def check_mappings(
    uids: Sequence[IdMapping], gids: Sequence[IdMapping], where: str
) -> UserNamespaceMappings:
    """Validate a pod's uid and gid mappings; InvalidArgument names the first problem."""
    for kind, maps in (("uid", uids), ("gid", gids)):
        _check_list(kind, maps, where)
    return UserNamespaceMappings(uids=tuple(uids), gids=tuple(gids))


def _check_list(kind: str, maps: Sequence[IdMapping], where: str) -> None:
    label = f"{where}: {kind} mappings"
    if not maps:
        raise InvalidArgument(
            f"{label} are missing; a user namespace of mode POD needs the pod's ranges "
            "(peapod does not pick them, the kubelet does)"
        )
    for m in maps:
        text = f"{m.container_id}:{m.host_id}:{m.length}"
        if m.length <= 0:
            raise InvalidArgument(f"{label}: {text} maps no id (length must be above 0)")
        for side, first in (("container", m.container_id), ("host", m.host_id)):
            if first < 0 or first + m.length > ID_LIMIT:
                raise InvalidArgument(
                    f"{label}: {text} overflows the {side} id range (ids must stay below "
                    f"{ID_LIMIT})"
                )
        if m.host_id == 0:
            raise InvalidArgument(
                f"{label}: {text} maps host {kind} 0 into the pod; a user namespace must "
                "not make the pod's ids the host's root"
            )
    for side in ("container_id", "host_id"):
        spans = sorted((getattr(m, side), getattr(m, side) + m.length) for m in maps)
        for (_, end), (start, _) in pairwise(spans):
            if start < end:
                raise InvalidArgument(f"{label} overlap on the {side.split('_')[0]} side")
    if len(maps) > 1:
        raise InvalidArgument(
            f"{label}: {len(maps)} given; peapod takes exactly one range per pod, as the "
            "kubelet sends"
        )
    if maps[0].host_of(0) is None:
        raise InvalidArgument(
            f"{label}: container {kind} 0 is not mapped ({maps[0].container_id}:"
            f"{maps[0].host_id}:{maps[0].length}); the pod's root must have a host id"
        )
