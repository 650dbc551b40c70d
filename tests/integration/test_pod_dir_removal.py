"""Deleting a pod directory: refused while anything is mounted at or under it, found by a
walk with statx (not by reading the host's whole mount table). Real mounts, as root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from base.errors import Internal
from sandbox.mounts import MS_BIND, mount, mount_points_met, umount_all
from sandbox.teardown import mounts_below, remove_pod_dir


@pytest.fixture
def pod_dir(tmp_path: Path) -> Iterator[Path]:
    """A pod directory as a build leaves it: namespace pin files, shm, files, a log."""
    if os.geteuid() != 0:
        pytest.fail("these tests mount: run them as root")
    d = tmp_path / "pod"
    (d / "ns").mkdir(parents=True)
    (d / "shm").mkdir()
    for kind in ("net", "ipc", "uts"):
        (d / "ns" / kind).touch()
    for name in ("hostname", "hosts", "resolv.conf", "infra.log"):
        (d / name).write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (d / "elsewhere").symlink_to(outside)  # never followed
    try:
        yield d
    finally:
        for _ in range(3):  # a mount hidden under another shows once that one is gone
            for point in sorted(mounts_below(tmp_path), key=len, reverse=True):
                umount_all(Path(point))


def test_nothing_mounted_the_directory_goes(pod_dir: Path) -> None:
    assert mount_points_met(pod_dir) == [] == mounts_below(pod_dir)
    remove_pod_dir(pod_dir)
    assert not pod_dir.exists() and (pod_dir.parent / "outside").is_dir()
    remove_pod_dir(pod_dir)  # idempotent


def test_a_pinned_namespace_or_a_mounted_shm_keeps_it(pod_dir: Path) -> None:
    mount("/proc/self/ns/net", pod_dir / "ns" / "net", None, MS_BIND, None)
    mount("shm", pod_dir / "shm", "tmpfs", 0, "size=1m")
    assert sorted(mount_points_met(pod_dir)) == sorted(mounts_below(pod_dir))
    with pytest.raises(Internal, match=r"still mounted: .*ns/net"):
        remove_pod_dir(pod_dir)
    assert (pod_dir / "hostname").exists()  # nothing was deleted
    umount_all(pod_dir / "ns" / "net")
    with pytest.raises(Internal, match=r"still mounted: .*/shm"):
        remove_pod_dir(pod_dir)
    umount_all(pod_dir / "shm")
    remove_pod_dir(pod_dir)
    assert not pod_dir.exists()


def test_a_mount_hidden_under_another_still_counts(pod_dir: Path) -> None:
    """A tmpfs on ns/ hides the pin files' mounts: the walk meets ns/ itself."""
    mount("/proc/self/ns/uts", pod_dir / "ns" / "uts", None, MS_BIND, None)
    mount("tmpfs", pod_dir / "ns", "tmpfs", 0, "size=1m")
    assert mount_points_met(pod_dir) == [str(pod_dir / "ns")]
    with pytest.raises(Internal, match="still mounted"):
        remove_pod_dir(pod_dir)
    umount_all(pod_dir / "ns")
    assert mount_points_met(pod_dir) == [str(pod_dir / "ns" / "uts")]


def test_the_directory_itself_mounted_counts(pod_dir: Path) -> None:
    mount("tmpfs", pod_dir, "tmpfs", 0, "size=1m")
    assert mount_points_met(pod_dir) == [str(pod_dir)]
    with pytest.raises(Internal, match="still mounted"):
        remove_pod_dir(pod_dir)
