"""Image volumes: a present image mounted read-only into a container (CRI ``Mount.image``).

Each volume is an overlay of the image's layers with no upper dir at
``<bundle>/volumes/<n>`` (its layer links in ``<storage>/volumes/<n>``), the same layer
dirs a rootfs stacks: nothing is copied, the page cache is shared with the image's
containers, whiteouts mean what they mean in a rootfs, and the kernel itself refuses
writes. The runtime then binds it (or ``image_sub_path`` inside it) read-only into the
container. The layers are held for the container like its rootfs's, and the container
counts as a user of the image, so RemoveImage refuses it until the container is gone.

``image_sub_path`` is relative; it is resolved inside the mounted image with symbolic
links read as the image means them (an absolute target starts at the image's root).
One that is absolute, climbs out of the image (``..`` or a link) or does not exist is
refused with INVALID_ARGUMENT before the runtime runs.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from base.errors import FailedPrecondition, InvalidArgument
from base.text import check_path, shorten
from oci.container import rootfs
from oci.spec.inputs import Mount

if TYPE_CHECKING:
    from oci.container.idmapped import IdMapper
    from oci.image.service import ImageService
    from oci.image.store import ImageRecord, ImageStore

VOLUMES = "volumes"  # under the bundle (mount points) and the storage dir (layer links)
_MAX_LINKS = 40


def check_sub_path(sub_path: str, where: str) -> str:
    """``sub_path`` if it is relative and has no ``..``; else InvalidArgument."""
    if not sub_path:
        return sub_path
    check_path(sub_path, f"image volume {where} image_sub_path", absolute=False)
    if sub_path.startswith("/") or ".." in sub_path.split("/"):
        raise InvalidArgument(
            f"image volume {where}: image_sub_path {shorten(sub_path)} must be a path "
            "relative to the image's root, without '..'"
        )
    return sub_path


def find_images(images: ImageService, mounts: Iterable[Mount]) -> dict[str, ImageRecord]:
    """The present image each image volume names, by reference; FailedPrecondition if absent.

    The kubelet pulls an image volume's image before it creates the container, so an
    absent one was never pulled or was removed since.
    """
    found: dict[str, ImageRecord] = {}
    for mount in mounts:
        if not mount.image or mount.image in found:
            continue
        record = images.status(mount.image)
        if record is None:
            raise FailedPrecondition(
                f"image volume {shorten(mount.container_path)}: image "
                f"{shorten(mount.image)} is not present on this node; pull it first",
                reason="IMAGE_NOT_FOUND",
            )
        found[mount.image] = record
    return found


def mount_volumes(
    store: ImageStore,
    holder: str,
    mounts: tuple[Mount, ...],
    images: dict[str, ImageRecord],
    bundle: Path,
    storage: Path,
    mapper: IdMapper | None = None,
) -> tuple[Mount, ...]:
    """Hold and mount every image volume; ``mounts`` with their ``host_path`` set.

    With ``mapper`` (a pod in its own user namespace) the overlay stacks ID-mapped
    copies of the layers, so the image's files show their owners inside.

    What is mounted stays mounted on failure: ``unmount_volumes`` (the container's
    teardown) takes it down, and ``ImageStore.release(holder)`` drops the holds.
    """
    out: list[Mount] = []
    for index, mount in enumerate(mounts):
        if not mount.image:
            out.append(mount)
            continue
        image = images[mount.image]
        lower = store.hold(holder, image.id)
        if mapper is not None:
            lower = mapper.layers(lower, f"i{index}-")
        target = bundle / VOLUMES / str(index)
        rootfs.mount_readonly_layers(lower, storage / VOLUMES / str(index), target)
        where = shorten(mount.container_path)
        source = resolve_sub_path(str(target), mount.image_sub_path, where, mount.image)
        out.append(replace(mount, host_path=source))
    return tuple(out)


def unmount_volumes(bundle: Path) -> None:
    """Unmount every image volume of the container whose bundle is ``bundle``; idempotent."""
    volumes = bundle / VOLUMES
    try:
        names = os.listdir(volumes)
    except FileNotFoundError:
        return
    for name in names:
        rootfs.unmount_rootfs(volumes / name)


def resolve_sub_path(root: str, sub_path: str, where: str, image: str) -> str:
    """The host path of ``sub_path`` inside the image mounted at ``root``.

    Every component is looked at with lstat; a link is followed as inside the image
    (an absolute target restarts at ``root``). InvalidArgument if the path leaves the
    image, loops, or does not exist.
    """
    check_sub_path(sub_path, where)
    shown = shorten(sub_path)
    pending = [p for p in sub_path.split("/") if p and p != "."]
    done: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                raise InvalidArgument(
                    f"image volume {where}: image_sub_path {shown} leads outside the image "
                    "through a symbolic link"
                )
            done.pop()
            continue
        host = os.path.join(root, *done, part)
        try:
            mode = os.lstat(host).st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise InvalidArgument(
                f"image volume {where}: image_sub_path {shown} does not exist in image "
                f"{shorten(image)}"
            ) from None
        if stat.S_ISLNK(mode):
            links += 1
            if links > _MAX_LINKS:
                raise InvalidArgument(
                    f"image volume {where}: image_sub_path {shown} has too many levels of "
                    "symbolic links"
                )
            target = os.readlink(host)
            if target.startswith("/"):
                done = []
            pending = [p for p in target.split("/") if p] + pending
            continue
        if pending and not stat.S_ISDIR(mode):
            raise InvalidArgument(
                f"image volume {where}: image_sub_path {shown} does not exist in image "
                f"{shorten(image)} ({part} is not a directory)"
            )
        done.append(part)
    return os.path.join(root, *done)
