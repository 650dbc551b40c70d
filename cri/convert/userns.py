"""User namespace options and ID mappings (pods, containers and mounts) to domain values."""

from __future__ import annotations

from collections.abc import Iterable

from api import api_pb2 as pb
from base.errors import InvalidArgument
from cri.convert.validate import choice
from sandbox.idmappings import IdMapping, UserNamespaceMappings, check_mappings
from sandbox.pod_config import NODE, POD

_MODES = {pb.POD: POD, pb.NODE: NODE}


def _mappings(items: Iterable[pb.IDMapping]) -> tuple[IdMapping, ...]:
    return tuple(IdMapping(m.container_id, m.host_id, m.length) for m in items)


def userns_mode(
    options: pb.NamespaceOption, where: str
) -> tuple[str, UserNamespaceMappings | None]:
    """(mode, mappings) of ``userns_options``: ("", None) when absent, (NODE, None), or
    (POD, checked mappings). CONTAINER and TARGET, and mappings with NODE, are refused."""
    if not options.HasField("userns_options"):
        return "", None
    userns = options.userns_options
    mode = choice(pb.NamespaceMode, _MODES, userns.mode, f"{where} userns_options mode")
    if mode == NODE:
        if userns.uids or userns.gids:
            raise InvalidArgument(
                f"{where} userns_options: mode NODE (the host's user namespace) takes no "
                "uid or gid mappings"
            )
        return NODE, None
    return POD, check_mappings(_mappings(userns.uids), _mappings(userns.gids),
                               f"{where} userns_options")  # fmt: skip


def mount_mappings(mount: pb.Mount, where: str) -> UserNamespaceMappings | None:
    """The ID mappings of an ID-mapped mount, checked as a pod's are; None for a plain one."""
    if not mount.uidMappings and not mount.gidMappings:
        return None
    return check_mappings(_mappings(mount.uidMappings), _mappings(mount.gidMappings), where)


def to_pb(mappings: UserNamespaceMappings) -> pb.UserNamespace:
    """The UserNamespace message of a pod in its own user namespace (mode POD)."""

    def rows(ms: tuple[IdMapping, ...]) -> list[pb.IDMapping]:
        return [pb.IDMapping(container_id=m.container_id, host_id=m.host_id, length=m.length)
                for m in ms]  # fmt: skip

    return pb.UserNamespace(mode=pb.POD, uids=rows(mappings.uids), gids=rows(mappings.gids))
