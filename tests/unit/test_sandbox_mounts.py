"""Unit tests for mountinfo parsing and the statx mount-point check."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sandbox.mounts import MOUNTINFO, is_mountpoint, parse_mountinfo
from sandbox.namespaces import is_nsfs


def test_parse_mountinfo_fields_and_escapes() -> None:
    text = (
        "43 27 0:4 net:[4026532178] /run/my\\040pod/net rw shared:2 - nsfs nsfs rw\n"
        "44 27 0:40 / /dev/shm rw,nosuid,nodev,noexec - tmpfs shm rw,size=65536k,mode=1777\n"
        "garbage line\n"
    )
    entries = parse_mountinfo(text)
    assert len(entries) == 2
    assert entries[0].mount_point == "/run/my pod/net"
    assert entries[0].root == "net:[4026532178]"
    assert entries[0].fstype == "nsfs"
    assert entries[1].options == "rw,nosuid,nodev,noexec"
    assert entries[1].source == "shm"
    assert entries[1].super_options == "rw,size=65536k,mode=1777"


def test_is_mountpoint_agrees_with_mountinfo(tmp_path: Path) -> None:
    # Mounts of our own and the host's stable ones: other tests mount and unmount in
    # parallel, so a snapshot of every host mount would race with them.
    own = tmp_path / "own"
    own.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(own)], check=True)
    try:
        points = {e.mount_point for e in parse_mountinfo(MOUNTINFO.read_text())}
        stable = [p for p in ("/", "/proc", "/sys", str(own)) if p in points]
        assert str(own) in stable and all(is_mountpoint(Path(p)) for p in stable)
        (own / "file").touch()
        (own / "dir").mkdir()
        for plain in (own / "file", own / "dir", tmp_path / "missing",
                      tmp_path / "missing" / "below"):
            assert str(plain) not in points and not is_mountpoint(plain)
    finally:
        subprocess.run(["umount", str(own)], check=True)
    assert not is_mountpoint(own)


def test_is_nsfs(tmp_path: Path) -> None:
    assert is_nsfs(Path("/proc/self/ns/net")) and is_nsfs(Path("/proc/self/ns/uts"))
    (tmp_path / "net").touch()
    assert not is_nsfs(tmp_path / "net") and not is_nsfs(tmp_path / "missing")
