"""Where conmon reads and writes things for one container.

conmon derives several paths itself (the attach socket, the control FIFO, the
exit file); this module computes the same names so peapod can find them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from base.errors import InvalidArgument

# runc's own rule for container ids; conmon also uses the id as a file name.
_ID_RE = re.compile(r"[A-Za-z0-9_+.-]+")

# sizeof(struct sockaddr_un.sun_path) on Linux.
SUN_PATH_MAX = 108


def validate_id(ctr_id: str) -> str:
    """Return ``ctr_id`` if it is usable as a runtime id and a file name."""
    if not ctr_id or not _ID_RE.fullmatch(ctr_id) or ctr_id in (".", ".."):
        raise InvalidArgument(
            f"container id {ctr_id!r} is not usable: use letters, digits, '_', '+', '.', '-'"
        )
    return ctr_id


@dataclass(frozen=True)
class MonitorPaths:
    """The files and directories conmon uses for one container.

    ``exit_dir`` is shared by all containers (conmon writes ``<exit_dir>/<id>``);
    ``persist_dir`` is per container (conmon writes ``exit`` and ``oom`` there);
    ``socket_dir`` is shared (conmon puts a ``<id>`` symlink to the bundle there).
    """

    bundle: str
    pidfile: str
    conmon_pidfile: str
    exit_dir: str
    persist_dir: str
    socket_dir: str
    log_path: str

    @classmethod
    def standard(
        cls, bundle: str, *, exit_dir: str, persist_dir: str, socket_dir: str, log_path: str
    ) -> MonitorPaths:
        """Paths with the pidfiles inside the bundle, as CRI-O lays them out."""
        return cls(
            bundle=bundle,
            pidfile=os.path.join(bundle, "pidfile"),
            conmon_pidfile=os.path.join(bundle, "conmon-pidfile"),
            exit_dir=exit_dir,
            persist_dir=persist_dir,
            socket_dir=socket_dir,
            log_path=log_path,
        )

    @property
    def ctl_path(self) -> str:
        """The control FIFO conmon creates in the bundle (resize, reopen log)."""
        return os.path.join(self.bundle, "ctl")

    @property
    def bundle_oom_path(self) -> str:
        """The OOM marker conmon creates in its working directory (the bundle)."""
        return os.path.join(self.bundle, "oom")

    def exit_file(self, ctr_id: str) -> str:
        """The exit file conmon writes into the shared exit directory."""
        return exit_file_path(self.exit_dir, ctr_id)

    def attach_path(self, cuuid: str) -> str:
        """The attach socket path, reached through conmon's short symlink."""
        return attach_socket_path(self.socket_dir, cuuid)


def exit_file_path(exit_dir: str, ctr_id: str) -> str:
    """``<exit_dir>/<ctr_id>``: where conmon writes the exit status."""
    return os.path.join(exit_dir, validate_id(ctr_id))


def attach_symlink_path(socket_dir: str, cuuid: str) -> str:
    """The symlink ``<socket_dir>/<cuuid>`` conmon points at the bundle.

    conmon shortens it by one byte when it would be exactly 107 bytes long, so
    that the socket path beneath it cannot collide with it; we do the same.
    """
    base = os.path.join(socket_dir, cuuid)
    if len(base.encode()) == SUN_PATH_MAX - 1:
        base = base[:-1]
    return base


def attach_socket_path(socket_dir: str, cuuid: str) -> str:
    """``<socket_dir>/<cuuid>/attach``: the path clients dial to attach."""
    return os.path.join(attach_symlink_path(socket_dir, cuuid), "attach")
