"""The overlay mounts of a container's rootfs and of an image volume, made by mount(2) from
a throwaway thread with its own working directory: real overlays as root, the layers'
order, read-only volumes, failures, and the daemon's working directory untouched."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from base.errors import Internal
from oci.container.rootfs import (
    mount_readonly_layers,
    mount_rootfs,
    remove_tree,
    unmount_rootfs,
)
from sandbox.mounts import MS_BIND, mount, mounts_at, umount_all


@pytest.fixture(autouse=True)
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("these tests mount overlays: run them as root")


@pytest.fixture
def targets() -> Iterator[list[Path]]:
    made: list[Path] = []
    try:
        yield made
    finally:
        for target in made:
            umount_all(target)


def layers(root: Path, count: int) -> list[Path]:
    """``count`` layer dirs, top first: each holds its own file, and all hold ``shared``
    with the layer's number (the top one must win)."""
    dirs = []
    for i in range(count):
        d = root / "layers" / f"layer-{i:03d}"
        d.mkdir(parents=True)
        (d / f"only-{i}").write_text(str(i))
        (d / "shared").write_text(str(i))
        dirs.append(d)
    return dirs


def test_sixty_layers_stack_in_order_and_writes_go_to_the_upper_dir(
    tmp_path: Path, targets: list[Path]
) -> None:
    cwd = os.getcwd()
    lower = layers(tmp_path, 60)
    storage, target = tmp_path / "ctr", tmp_path / "ctr" / "rootfs"
    targets.append(target)
    mount_rootfs(lower, storage, target)
    [entry] = mounts_at(target)
    # relative lowerdirs, which resolve only in the storage dir
    assert entry.fstype == "overlay" and "lowerdir=l/0:l/1:" in entry.super_options
    assert (target / "shared").read_text() == "0"  # the top layer wins
    assert all((target / f"only-{i}").read_text() == str(i) for i in range(60))
    (target / "new").write_text("x")
    assert (storage / "upper" / "new").read_text() == "x"
    assert not any((d / "new").exists() for d in lower)
    assert os.getcwd() == cwd  # the daemon's working directory never moved
    unmount_rootfs(target)
    assert mounts_at(target) == []


def test_an_image_volume_is_read_only(tmp_path: Path, targets: list[Path]) -> None:
    lower = layers(tmp_path, 3)
    work, target = tmp_path / "vol", tmp_path / "vol-target"
    targets.append(target)
    mount_readonly_layers(lower, work, target)
    [entry] = mounts_at(target)
    assert entry.fstype == "overlay" and "ro" in entry.options.split(",")
    assert (target / "shared").read_text() == "0"
    with pytest.raises(OSError) as info:
        (target / "new").write_text("x")
    assert info.value.errno == errno.EROFS


def test_a_failed_mount_is_internal_and_leaves_nothing_mounted(
    tmp_path: Path, targets: list[Path]
) -> None:
    lower = layers(tmp_path, 2)
    storage, target = tmp_path / "ctr", tmp_path / "ctr" / "rootfs"
    (storage / "work").mkdir(parents=True)
    mount("tmpfs", storage / "work", "tmpfs", 0, "size=1m")  # work and upper on two filesystems
    targets += [storage / "work", target]
    with pytest.raises(Internal, match=r"cannot mount the container's root filesystem at .*: "
                                       r"Invalid argument"):
        mount_rootfs(lower, storage, target)
    assert mounts_at(target) == []


def test_mounts_from_many_threads_at_once_each_use_their_own_directory(
    tmp_path: Path, targets: list[Path]
) -> None:
    """Sixteen rootfs mounts from eight pool threads: the relative lowerdirs of each
    resolve in its own storage dir (each container sees its own layers), and the pool's
    threads keep the process's working directory."""
    cwd = os.getcwd()
    seen: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        lower = layers(tmp_path / f"c{i}", 2)
        (lower[0] / "who").write_text(f"container {i}")
        target = tmp_path / f"c{i}" / "rootfs"
        with lock:
            targets.append(target)
        mount_rootfs(lower, tmp_path / f"c{i}" / "storage", target)
        assert (target / "who").read_text() == f"container {i}"
        with lock:
            seen.append(os.getcwd())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(16)))
    assert seen == [cwd] * 16


def test_a_container_dir_is_not_deleted_while_something_is_mounted_in_it(
    tmp_path: Path, targets: list[Path]
) -> None:
    """The rootfs still mounted: refused and nothing deleted (not even the upper dir's
    files, nor, through the overlay, anything of the layers); a bind-mounted file: the
    deletion stops at it and its source is untouched; unmounted, the directory goes."""
    lower = layers(tmp_path, 2)
    storage, target = tmp_path / "ctr", tmp_path / "ctr" / "rootfs"
    targets.append(target)
    mount_rootfs(lower, storage, target)
    (target / "written").write_text("x")
    with pytest.raises(Internal, match=r"still mounted at .*/ctr/rootfs"):
        remove_tree(storage)
    assert (storage / "upper" / "written").exists() and (lower[0] / "only-0").exists()
    unmount_rootfs(target)
    source = tmp_path / "precious"
    source.write_text("keep")
    (storage / "bound").touch()
    mount(str(source), storage / "bound", None, MS_BIND, None)
    targets.append(storage / "bound")
    with pytest.raises(Internal, match="cannot delete"):
        remove_tree(storage)
    assert source.read_text() == "keep"
    umount_all(storage / "bound")
    remove_tree(storage)
    assert not storage.exists() and all(d.is_dir() for d in lower)
    storage.mkdir()
    mount("tmpfs", storage, "tmpfs", 0, "size=1m")
    targets.append(storage)
    (storage / "inside").write_text("x")
    with pytest.raises(Internal, match="still mounted"):
        remove_tree(storage)  # the directory itself mounted: its content is not ours
    assert (storage / "inside").exists()
