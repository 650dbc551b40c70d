"""Unit tests for mountinfo parsing."""

from __future__ import annotations

from sandbox.mounts import parse_mountinfo


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
