"""Unit tests for cgroup driver path conversion and layout detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from base.errors import FailedPrecondition, InvalidArgument
from sandbox.cgroup_layout import HYBRID, V1, V2, layout_from_mountinfo
from sandbox.cgroup_paths import SYSTEMD, cgroup_path, expand_slice


def test_expand_slice() -> None:
    assert expand_slice("kubepods-besteffort-pod123.slice") == (
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod123.slice"
    )
    assert expand_slice("kubepods.slice") == "/kubepods.slice"
    assert expand_slice("-.slice") == "/"


@pytest.mark.parametrize(
    "name", ["kubepods", "a--b.slice", "-a.slice", "a-.slice", "/kubepods.slice", "a b.slice"]
)
def test_expand_slice_rejects(name: str) -> None:
    with pytest.raises(InvalidArgument):
        expand_slice(name)


def test_cgroup_path_drivers() -> None:
    assert cgroup_path("/kubepods/besteffort/pod1") == "/kubepods/besteffort/pod1"
    assert cgroup_path("/kubepods//burstable/pod1/") == "/kubepods/burstable/pod1"
    assert cgroup_path("kubepods-pod1.slice", SYSTEMD) == "/kubepods.slice/kubepods-pod1.slice"


@pytest.mark.parametrize(
    ("parent", "driver"),
    [
        ("kubepods/pod1", "cgroupfs"),
        ("/", "cgroupfs"),
        ("/kubepods/../etc", "cgroupfs"),
        ("/kubepods/pod 1", "cgroupfs"),
        ("/kubepods/pod1", "systemd"),
        ("-.slice", "systemd"),
        ("/kubepods", "nosuchdriver"),
    ],
)
def test_cgroup_path_rejects(parent: str, driver: str) -> None:
    with pytest.raises(InvalidArgument):
        cgroup_path(parent, driver)


HYBRID_INFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:5 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
90 27 0:32 /sub /mnt/memsub rw,relatime - cgroup cgroup rw,memory
"""


def test_layout_hybrid_with_comounted_controllers() -> None:
    layout = layout_from_mountinfo(HYBRID_INFO)
    assert layout.version == HYBRID
    assert layout.v1["cpu"] == layout.v1["cpuacct"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert layout.v1["memory"] == Path("/sys/fs/cgroup/memory")  # not the subtree bind
    assert layout.named == {"systemd": Path("/sys/fs/cgroup/systemd")}
    assert layout.unified == Path("/sys/fs/cgroup/unified")


def test_layout_v1_and_v2() -> None:
    v1_only = "\n".join(line for line in HYBRID_INFO.splitlines() if "cgroup2" not in line)
    assert layout_from_mountinfo(v1_only).version == V1
    v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    layout = layout_from_mountinfo(v2)
    assert (layout.version, layout.unified, dict(layout.v1)) == (V2, Path("/sys/fs/cgroup"), {})
    with pytest.raises(FailedPrecondition):
        layout_from_mountinfo("27 1 254:0 / / rw - ext4 /dev/vda rw\n")
