"""A user-namespaced container's files with the right owners, without copying or chowning.

runc 1.1 cannot make ID-mapped mounts itself (its ``idmap`` mount option came with
1.2), so peapod makes them before the runtime runs, with the pod's pinned user
namespace as the mapping (``sandbox.idmap``):

* every image layer gets an ID-mapped copy at ``<bundle>/idmap/<name><n>``, and the
  overlay (rootfs or image volume) is assembled from the copies. overlayfs keeps
  its own private clones of its layers, so the copies are detached right after
  (``release``): the overlay is the only mount left. Its upper dir belongs to the
  pod's root on the host, so what the container writes lands there with the
  pod's host ids;
* a bind mount the request marks ID-mapped (the kubelet marks every mount of a
  ``hostUsers: false`` pod with the pod's mappings) is replaced by an ID-mapped copy
  of its source at ``<bundle>/idmap/b<n>``, which the runtime binds. That copy is
  detached once the runtime made the container (it holds its own).

An overlay itself cannot be ID-mapped (the kernel refuses), which is why the
layers are mapped and not the assembled tree. A filesystem that cannot map ids
fails the create with FAILED_PRECONDITION, and the teardown detaches whatever
was attached. The bundle and its ``idmap`` dir are made searchable by the pod's root
group only (0710, group the pod's root gid): the runtime's init reaches the rootfs and
mount sources as the pod's root, which is not host root, and no other host user may
reach conmon's FIFOs, the attach socket or the rootfs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from base.errors import Internal, InvalidArgument
from base.text import shorten
from oci.spec.inputs import Mount, MountPropagation
from sandbox.idmap import idmapped_clone
from sandbox.idmappings import UserNamespaceMappings
from sandbox.mounts import umount_all

IDMAP = "idmap"  # under the bundle


class IdMapper:
    """The ID-mapped copies one container build makes in the pod's user namespace."""

    def __init__(self, bundle: Path, userns_file: Path, mappings: UserNamespaceMappings) -> None:
        self.staging = bundle / IDMAP
        self.userns_file = userns_file
        self.mappings = mappings
        _searchable_by_pod_root(bundle, mappings.root_gid)
        self.staging.mkdir(mode=0o700, exist_ok=True)
        _searchable_by_pod_root(self.staging, mappings.root_gid)

    def layers(self, lower_dirs: Sequence[Path], name: str) -> list[Path]:
        """ID-mapped copies of ``lower_dirs`` (same order) to stack instead of them."""
        out = []
        for index, layer in enumerate(lower_dirs):
            target = self.staging / f"{name}{index}"
            target.mkdir(mode=0o755, exist_ok=True)
            idmapped_clone(layer, target, self.userns_file)
            out.append(target)
        return out

    def own_upper(self, upper: Path) -> None:
        """Make ``upper`` (created if missing) the pod root's on the host."""
        upper.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chown(upper, self.mappings.root_uid, self.mappings.root_gid)

    def volumes(self, mounts: Sequence[Mount]) -> tuple[Mount, ...]:
        """``mounts`` with each ID-mapped bind's source replaced by an ID-mapped copy
        (``check_mounts`` has passed)."""
        out = []
        for index, mount in enumerate(mounts):
            if mount.idmap is None or mount.image:  # image volumes: their layers are mapped
                out.append(mount)
                continue
            source = Path(os.path.realpath(mount.host_path))
            if not source.exists():
                source.mkdir(mode=0o755, parents=True, exist_ok=True)  # as for any bind
            target = self.staging / f"b{index}"
            if source.is_dir():
                target.mkdir(mode=0o755, exist_ok=True)
            else:
                target.touch(mode=0o644, exist_ok=True)
            idmapped_clone(source, target, self.userns_file)
            out.append(replace(mount, host_path=str(target)))
        return tuple(out)


def _searchable_by_pod_root(path: Path, root_gid: int) -> None:
    """Let the pod's root group search ``path`` (runc's init in the pod's user namespace
    reaches the rootfs and the ID-mapped binds through it), and no other host user."""
    os.chown(path, -1, root_gid)
    os.chmod(path, 0o710)


def check_mounts(mounts: Sequence[Mount], pod: UserNamespaceMappings | None) -> None:
    """Every ID-mapped mount must use the pod's own mappings and private propagation."""
    for mount in mounts:
        if mount.idmap is not None:
            _check_mount(mount, pod)


def _check_mount(mount: Mount, pod: UserNamespaceMappings | None) -> None:
    where = shorten(mount.container_path)
    if pod is None:
        raise InvalidArgument(
            f"mount {where} asks for an ID-mapped mount, but the pod has no user namespace "
            "(userns_options mode POD)"
        )
    if mount.idmap != pod:
        raise InvalidArgument(
            f"mount {where}: its uid/gid mappings differ from the pod's user namespace; "
            "peapod maps a mount with the pod's own mappings only"
        )
    if mount.propagation is not MountPropagation.PRIVATE:
        raise InvalidArgument(
            f"mount {where}: an ID-mapped mount is a private copy of its source, so it cannot "
            "receive (or send) host mounts; use private propagation"
        )


def release(bundle: Path) -> None:
    """Detach every ID-mapped copy under ``bundle`` (what uses them holds its own); idempotent."""
    staging = bundle / IDMAP
    try:
        names = os.listdir(staging)
    except FileNotFoundError:
        return
    for name in names:
        try:
            umount_all(staging / name)
        except OSError as exc:
            raise Internal(f"cannot detach the ID-mapped copy {staging / name}: "
                           f"{exc.strerror}") from exc  # fmt: skip
