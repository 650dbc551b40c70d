"""A container's root filesystem: an overlay of the image's layers plus its own upper dir.

Image volumes use the same overlay without an upper dir, which the kernel keeps
read-only (``mount_readonly_layers``).

The kernel copies mount options into one page (4096 bytes), which absolute paths of
60 layers do not fit. So each layer gets a short symlink in the container's storage
dir (``l/0``, ``l/1``...; the top layer first) and mount(2) runs with that dir as
its working directory, giving ``lowerdir=l/0:l/1:...`` - about 5 bytes per layer.
A relative lowerdir is resolved against the caller's working directory, which the
daemon's threads share; so the mount is made by a throwaway thread with a working
directory of its own (``sandbox.ns_thread.in_directory``), not by a child process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from base.errors import Internal, InvalidArgument
from sandbox.mounts import MS_RDONLY, is_mountpoint, mount, mount_points_met, umount_all
from sandbox.ns_thread import in_directory

MAX_OPTIONS = 4095  # one page, less the terminating NUL
LINKS = "l"
UPPER = "upper"
WORK = "work"


def overlay_options(layer_count: int) -> str:
    """The overlay mount options for ``layer_count`` layers, relative to the storage dir."""
    lower = ":".join(f"{LINKS}/{i}" for i in range(layer_count))
    return f"lowerdir={lower},upperdir={UPPER},workdir={WORK}"


def readonly_overlay_options(layer_count: int) -> str:
    """Options of an overlay of ``layer_count`` lower dirs and no upper dir (read-only)."""
    lower = ":".join(f"{LINKS}/{i}" for i in range(layer_count))
    return f"ro,lowerdir={lower}"


def mount_rootfs(lower_dirs: Sequence[Path], storage_dir: Path, target: Path) -> None:
    """Mount the overlay of ``lower_dirs`` (top first) with a fresh upper dir on ``target``.

    ``storage_dir`` receives the layer links, ``upper`` and ``work``. On failure
    nothing stays mounted; the caller removes ``storage_dir``.
    """
    layers = list(lower_dirs)
    if not layers:
        layers = [_empty_dir(storage_dir)]
    options = overlay_options(len(layers))
    _check_options(len(layers), options)
    _link_layers(layers, storage_dir)
    for sub in (UPPER, WORK):
        (storage_dir / sub).mkdir(mode=0o755, exist_ok=True)
    _mount_overlay(options, storage_dir, target, "the container's root filesystem")


def mount_readonly_layers(lower_dirs: Sequence[Path], work_dir: Path, target: Path) -> None:
    """Mount the overlay of ``lower_dirs`` (top first) read-only on ``target``.

    With no upper dir the kernel refuses every write (EROFS); nothing is copied. It
    needs at least two lower dirs then, so an empty dir under ``work_dir`` is always
    the bottom one. ``work_dir`` also receives the layer links. On failure nothing
    stays mounted; the caller removes ``work_dir``.
    """
    layers = [*lower_dirs, _empty_dir(work_dir)]
    if len(layers) < 2:
        layers.append(_empty_dir(work_dir, "empty2"))
    options = readonly_overlay_options(len(layers))
    _check_options(len(layers), options)
    _link_layers(layers, work_dir)
    _mount_overlay(options, work_dir, target, "an image volume")


def _empty_dir(parent: Path, name: str = "empty") -> Path:
    empty = parent / name
    empty.mkdir(mode=0o755, parents=True, exist_ok=True)
    return empty


def _check_options(layer_count: int, options: str) -> None:
    if len(options) > MAX_OPTIONS:
        raise InvalidArgument(
            f"the image has {layer_count} layers; overlay cannot stack that many "
            f"({len(options)} bytes of mount options, the kernel takes {MAX_OPTIONS})"
        )


def _link_layers(layers: Sequence[Path], storage_dir: Path) -> None:
    """``storage_dir/l/<i>``: a short symlink to each layer dir, in ``layers``' order."""
    links = storage_dir / LINKS
    links.mkdir(mode=0o700, parents=True, exist_ok=True)
    for i, layer in enumerate(layers):
        if not layer.is_dir():
            raise Internal(f"image layer {layer} is missing from the image store")
        link = links / str(i)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(layer)


def _mount_overlay(options: str, storage_dir: Path, target: Path, what: str) -> None:
    """Mount an overlay on ``target`` from ``storage_dir`` (the options' paths are relative
    to it); a leading ``ro,`` makes the mount read-only, as ``mount -o ro,...`` would."""
    target = Path(os.path.abspath(target))
    target.mkdir(mode=0o755, parents=True, exist_ok=True)
    flags, data = (MS_RDONLY, options[3:]) if options.startswith("ro,") else (0, options)
    try:
        in_directory(str(storage_dir), lambda: mount("overlay", target, "overlay", flags, data))
    except OSError as exc:
        unmount_rootfs(target)
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise Internal(f"cannot mount {what} at {target}: {why} (the kernel log may say "
                       "more)") from None  # fmt: skip


def unmount_rootfs(target: Path) -> None:
    """Detach whatever is mounted on ``target``; idempotent."""
    try:
        umount_all(target)
    except OSError as exc:
        raise Internal(
            f"cannot unmount container root filesystem {target}: {exc.strerror}"
        ) from exc


def is_mounted(target: Path) -> bool:
    return is_mountpoint(target)


def remove_tree(path: Path) -> None:
    """Delete a container directory; refuses one that still has a mount on it.

    Its directories are looked at with statx before anything is deleted (a mounted
    file cannot be unlinked: rmtree stops there), not the host's whole mount table.
    """
    if not path.exists():
        return
    busy = mount_points_met(path, files=False)
    if busy:
        raise Internal(f"cannot delete {path}: still mounted at {', '.join(busy)}")
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise Internal(f"cannot delete {path}: {exc}") from exc
