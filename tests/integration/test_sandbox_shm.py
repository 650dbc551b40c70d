"""The pod's /dev/shm tmpfs: type, size, mode and flags, and unmounting."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from base.errors import AlreadyExists, InvalidArgument
from sandbox.mounts import mounts_at, umount_all
from sandbox.shm import mount_shm, unmount_shm

MIB = 1024 * 1024


@pytest.fixture
def shm_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "shm"
    try:
        yield d
    finally:
        umount_all(d)


def test_shm_is_a_sized_tmpfs(shm_dir: Path) -> None:
    mount_shm(shm_dir, 64 * MIB)
    (entry,) = mounts_at(shm_dir)
    assert entry.fstype == "tmpfs"
    assert {"nosuid", "nodev", "noexec"} <= set(entry.options.split(","))
    assert stat.S_IMODE(os.stat(shm_dir).st_mode) == 0o1777
    st = os.statvfs(shm_dir)
    assert st.f_blocks * st.f_frsize == 64 * MIB


def test_shm_size_rounds_up_to_pages(shm_dir: Path) -> None:
    mount_shm(shm_dir, 1_000_000)
    st = os.statvfs(shm_dir)
    assert 1_000_000 <= st.f_blocks * st.f_frsize < 1_000_000 + os.sysconf("SC_PAGE_SIZE")


def test_unmount_is_idempotent_and_keeps_dir(shm_dir: Path) -> None:
    mount_shm(shm_dir, 4 * MIB)
    (shm_dir / "x").write_text("data")
    unmount_shm(shm_dir)
    assert mounts_at(shm_dir) == []
    assert shm_dir.is_dir() and not (shm_dir / "x").exists()
    unmount_shm(shm_dir)
    unmount_shm(shm_dir.parent / "never-existed")


def test_refuses_double_mount_and_bad_size(shm_dir: Path) -> None:
    with pytest.raises(InvalidArgument):
        mount_shm(shm_dir, 0)
    assert mounts_at(shm_dir) == []
    mount_shm(shm_dir, 4 * MIB)
    with pytest.raises(AlreadyExists):
        mount_shm(shm_dir, 4 * MIB)
    assert len(mounts_at(shm_dir)) == 1
