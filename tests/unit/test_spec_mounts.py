"""Mounts: kernel filesystems, /dev/shm, pod files, requested binds, propagation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from base.errors import Internal, InvalidArgument
from oci.spec.inputs import Mount, MountPropagation
from oci.spec.mounts import (
    check_propagation,
    image_volume_mount,
    kernel_mounts,
    merge_mounts,
    pod_file_mounts,
    propagation_of,
    request_mount,
    rootfs_propagation,
    shm_mount,
)
from sandbox.facts import SandboxFacts

MOUNTINFO = (
    "22 1 0:21 / / rw,relatime - ext4 /dev/vda rw\n"
    "30 22 0:30 / /mnt/shared rw shared:5 - tmpfs tmpfs rw\n"
    "31 22 0:31 / /mnt/slave rw master:7 - tmpfs tmpfs rw\n"
    "32 22 0:32 / /mnt/both rw shared:9 master:7 - tmpfs tmpfs rw\n"
    "33 30 0:33 / /mnt/shared/private rw - tmpfs tmpfs rw\n"
    "34 22 0:34 / /mnt/with\\040space rw shared:3 - tmpfs tmpfs rw\n"
)


def by_dest(mounts: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {m["destination"]: m for m in mounts}


def test_kernel_mounts_unprivileged_read_only_sys() -> None:
    mounts = by_dest(kernel_mounts(privileged=False, cgroup_v2=False))
    assert list(mounts) == ["/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    assert mounts["/proc"] == {
        "destination": "/proc", "type": "proc", "source": "proc",
        "options": ["nosuid", "noexec", "nodev"],
    }
    assert mounts["/sys"]["options"] == ["nosuid", "noexec", "nodev", "ro"]
    assert mounts["/sys/fs/cgroup"] == {
        "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
    }
    assert mounts["/dev"]["type"] == "tmpfs"
    assert "newinstance" in mounts["/dev/pts"]["options"]


def test_kernel_mounts_privileged_and_v2() -> None:
    mounts = by_dest(kernel_mounts(privileged=True, cgroup_v2=True))
    assert mounts["/sys"]["options"][-1] == "rw"
    assert mounts["/sys/fs/cgroup"]["type"] == "cgroup2"
    assert mounts["/sys/fs/cgroup"]["options"][-1] == "rw"


def test_shm_variants() -> None:
    assert shm_mount(SandboxFacts(shm_path="/run/peapod/pod1/shm")) == {
        "destination": "/dev/shm", "type": "bind", "source": "/run/peapod/pod1/shm",
        "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev", "rw"],
    }
    assert shm_mount(SandboxFacts(host_ipc=True, shm_path="/x"))["source"] == "/dev/shm"
    private = shm_mount(SandboxFacts())
    assert (private["type"], private["source"]) == ("tmpfs", "shm")
    assert "mode=1777" in private["options"]


def test_pod_files_bound_ro_with_readonly_rootfs() -> None:
    sandbox = SandboxFacts(hostname_path="/p/hostname", resolv_conf_path="/p/resolv.conf")
    assert pod_file_mounts(sandbox, readonly=True) == [
        {"destination": "/etc/hostname", "type": "bind", "source": "/p/hostname",
         "options": ["bind", "rprivate", "nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/etc/resolv.conf", "type": "bind", "source": "/p/resolv.conf",
         "options": ["bind", "rprivate", "nosuid", "noexec", "nodev", "ro"]},
    ]
    assert pod_file_mounts(sandbox, readonly=False)[0]["options"][-1] == "rw"


class TestRequestMount:
    def test_bind_options_by_propagation(self, tmp_path: Path) -> None:
        src = str(tmp_path)
        for propagation, word in [
            (MountPropagation.PRIVATE, "rprivate"),
            (MountPropagation.HOST_TO_CONTAINER, "rslave"),
            (MountPropagation.BIDIRECTIONAL, "rshared"),
        ]:
            got = request_mount(Mount("/data/", src, readonly=True, propagation=propagation))
            assert got == {"destination": "/data", "type": "bind", "source": src,
                           "options": ["rbind", word, "ro"]}

    def test_extra_options_and_rro(self, tmp_path: Path) -> None:
        got = request_mount(Mount("/d", str(tmp_path), readonly=True, recursive_read_only=True,
                                  options=("noexec", "nosuid")))
        assert got["options"] == ["rbind", "rprivate", "ro", "rro", "noexec", "nosuid"]

    def test_rro_needs_readonly_and_private(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidArgument, match="recursive_read_only"):
            request_mount(Mount("/d", str(tmp_path), recursive_read_only=True))
        with pytest.raises(InvalidArgument, match="recursive_read_only"):
            request_mount(Mount("/d", str(tmp_path), readonly=True, recursive_read_only=True,
                                propagation=MountPropagation.HOST_TO_CONTAINER))

    def test_unknown_option_rejected(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidArgument, match="unsupported options"):
            request_mount(Mount("/d", str(tmp_path), options=("suid", "remount")))

    def test_paths_must_be_absolute(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidArgument, match="container_path"):
            request_mount(Mount("data", str(tmp_path)))
        with pytest.raises(InvalidArgument, match="host_path"):
            request_mount(Mount("/data", "relative/dir"))
        with pytest.raises(InvalidArgument, match="no host_path"):
            request_mount(Mount("/data", ""))

    def test_missing_source_created_as_directory(self, tmp_path: Path) -> None:
        src = tmp_path / "a" / "b"
        got = request_mount(Mount("/data", str(src)))
        assert src.is_dir() and got["source"] == str(src)
        assert oct(src.stat().st_mode & 0o777) == oct(0o755 & ~_umask())

    def test_symlinked_source_resolved(self, tmp_path: Path) -> None:
        (tmp_path / "real").mkdir()
        (tmp_path / "link").symlink_to(tmp_path / "real")
        got = request_mount(Mount("/data", str(tmp_path / "link")))
        assert got["source"] == str(tmp_path / "real")


class TestImageVolumeMount:
    def test_read_only_bind_of_the_mounted_image(self) -> None:
        mount = Mount("/data/", "/run/b/volumes/0/etc", readonly=True, image="reg/img:1")
        assert request_mount(mount) == image_volume_mount(mount) == {
            "destination": "/data", "type": "bind", "source": "/run/b/volumes/0/etc",
            "options": ["rbind", "rprivate", "ro", "nosuid", "nodev"],
        }  # fmt: skip

    def test_noexec_when_asked_and_options_checked(self) -> None:
        mount = Mount("/d", "/run/b/volumes/0", image="img", options=("noexec",))
        assert image_volume_mount(mount)["options"][-1] == "noexec"
        with pytest.raises(InvalidArgument, match="unsupported options"):
            image_volume_mount(Mount("/d", "/run/b/volumes/0", image="img", options=("rw1",)))

    def test_source_never_created(self, tmp_path: Path) -> None:
        missing = tmp_path / "not-mounted"
        assert image_volume_mount(Mount("/d", str(missing), image="img"))["source"] == str(missing)
        assert not missing.exists()
        with pytest.raises(Internal, match="was not mounted"):
            image_volume_mount(Mount("/d", "", image="img"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_merge_overrides_defaults_and_sorts_parents_first() -> None:
    defaults = [
        {"destination": "/proc"}, {"destination": "/dev"}, {"destination": "/dev/shm"},
        {"destination": "/etc/hosts", "source": "pod"},
    ]
    requested = [
        {"destination": "/var/lib/x/y"}, {"destination": "/var"},
        {"destination": "/etc/hosts", "source": "kubelet"},
    ]
    merged = merge_mounts(defaults, requested)
    assert [m["destination"] for m in merged] == [
        "/proc", "/dev", "/var", "/dev/shm", "/etc/hosts", "/var/lib/x/y",
    ]
    assert [m["source"] for m in merged if m["destination"] == "/etc/hosts"] == ["kubelet"]


def test_rootfs_propagation() -> None:
    private = Mount("/a", "/a")
    slave = Mount("/b", "/b", propagation=MountPropagation.HOST_TO_CONTAINER)
    shared = Mount("/c", "/c", propagation=MountPropagation.BIDIRECTIONAL)
    assert rootfs_propagation([]) == "rprivate"
    assert rootfs_propagation([private]) == "rprivate"
    assert rootfs_propagation([private, slave]) == "rslave"
    assert rootfs_propagation([slave, shared]) == "rshared"


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/", "private"), ("/etc", "private"), ("/mnt/shared", "shared"),
     ("/mnt/shared/x/y", "shared"), ("/mnt/sharedness", "private"), ("/mnt/slave/a", "slave"),
     ("/mnt/both", "shared"), ("/mnt/shared/private/z", "private"),
     ("/mnt/with space/f", "shared")],
)
def test_propagation_of(path: str, kind: str) -> None:
    assert propagation_of(path, MOUNTINFO) == kind


def test_check_propagation() -> None:
    def check(propagation: MountPropagation, source: str) -> None:
        mount = Mount("/in", source, propagation=propagation)
        check_propagation([(mount, {"source": source})], lambda: MOUNTINFO)

    check(MountPropagation.BIDIRECTIONAL, "/mnt/shared/vol")
    check(MountPropagation.HOST_TO_CONTAINER, "/mnt/slave/vol")
    check(MountPropagation.HOST_TO_CONTAINER, "/mnt/shared/vol")
    check(MountPropagation.PRIVATE, "/etc")
    with pytest.raises(InvalidArgument, match=r"bidirectional.*slave mount"):
        check(MountPropagation.BIDIRECTIONAL, "/mnt/slave/vol")
    with pytest.raises(InvalidArgument, match=r"host-to-container.*private mount"):
        check(MountPropagation.HOST_TO_CONTAINER, "/etc")


def test_check_propagation_reads_mountinfo_only_when_needed() -> None:
    def boom() -> str:
        raise AssertionError("mountinfo read for private mounts")

    check_propagation([(Mount("/in", "/x"), {"source": "/x"})], boom)
