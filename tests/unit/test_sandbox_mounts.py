"""Unit tests for mountinfo parsing and the statx mount-point check."""

from __future__ import annotations

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
    points = {e.mount_point for e in parse_mountinfo(MOUNTINFO.read_text())}
    reachable = [p for p in points if Path(p).exists()]
    assert reachable and all(is_mountpoint(Path(p)) for p in reachable)
    (tmp_path / "file").touch()
    for plain in (tmp_path / "file", tmp_path / "missing", tmp_path / "missing" / "below"):
        assert str(plain) not in points and not is_mountpoint(plain)


def test_is_nsfs(tmp_path: Path) -> None:
    assert is_nsfs(Path("/proc/self/ns/net")) and is_nsfs(Path("/proc/self/ns/uts"))
    (tmp_path / "net").touch()
    assert not is_nsfs(tmp_path / "net") and not is_nsfs(tmp_path / "missing")
