"""Unit tests for pod cgroup bookkeeping, on fake hierarchies made of plain directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from base.errors import Internal
from sandbox.cgroup_layout import HYBRID, V2, CgroupLayout
from sandbox.cgroups import (
    V2_LEAF,
    PodCgroup,
    create_pod_cgroup,
    hierarchy_roots,
    plan_pod_cgroup,
)


def fake_v1(tmp_path: Path) -> CgroupLayout:
    roots = {}
    for name in ("cpu,cpuacct", "cpuset", "memory", "pids", "systemd", "unified"):
        (tmp_path / name).mkdir()
        roots[name] = tmp_path / name
    (tmp_path / "cpuset" / "cpuset.cpus").write_text("0-3\n")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    v1 = {
        "cpu": roots["cpu,cpuacct"],
        "cpuacct": roots["cpu,cpuacct"],
        "cpuset": roots["cpuset"],
        "memory": roots["memory"],
        "pids": roots["pids"],
    }
    return CgroupLayout(HYBRID, v1, roots["unified"], {"systemd": roots["systemd"]})


def test_hierarchy_roots_dedupes_comounted(tmp_path: Path) -> None:
    layout = fake_v1(tmp_path)
    assert [p.name for p in hierarchy_roots(layout)] == [
        "cpu,cpuacct",
        "cpuset",
        "memory",
        "pids",
        "systemd",
        "unified",
    ]


def test_create_records_only_what_it_made(tmp_path: Path) -> None:
    layout = fake_v1(tmp_path)
    (tmp_path / "memory" / "kubepods").mkdir()  # made by someone else
    cg = create_pod_cgroup("/kubepods/besteffort/pod1", layout=layout)
    assert cg.path == "/kubepods/besteffort/pod1"
    assert all(d.is_dir() and str(d).endswith("/kubepods/besteffort/pod1") for d in cg.dirs)
    assert len(cg.dirs) == 6
    assert tmp_path / "memory" / "kubepods" not in cg.created
    assert tmp_path / "memory" / "kubepods" / "besteffort" in cg.created
    assert tmp_path / "cpuset" / "kubepods" in cg.created


def test_record_round_trip(tmp_path: Path) -> None:
    cg = create_pod_cgroup("kubepods-pod1.slice", driver="systemd", layout=fake_v1(tmp_path))
    again = PodCgroup.from_record(cg.to_record())
    assert again == cg
    assert again.path == "/kubepods.slice/kubepods-pod1.slice"


def test_remove_deepest_first_and_keeps_foreign_parents(tmp_path: Path) -> None:
    layout = fake_v1(tmp_path)
    (tmp_path / "pids" / "kubepods").mkdir()
    cg = create_pod_cgroup("/kubepods/besteffort/pod1", layout=layout)
    PodCgroup.from_record(cg.to_record()).remove()
    assert (tmp_path / "pids" / "kubepods").is_dir()
    assert not (tmp_path / "pids" / "kubepods" / "besteffort").exists()
    assert not (tmp_path / "memory" / "kubepods").exists()
    cg.remove()  # idempotent: everything is already gone


def test_remove_leaves_parent_shared_with_another_pod(tmp_path: Path) -> None:
    layout = fake_v1(tmp_path)
    first = create_pod_cgroup("/kubepods/pod1", layout=layout)
    second = create_pod_cgroup("/kubepods/pod2", layout=layout)
    assert second.created == second.dirs  # only its own pod dirs
    first.remove()
    assert all(d.is_dir() for d in second.dirs)
    assert first.created == []
    second.remove()
    assert (tmp_path / "memory" / "kubepods").is_dir()  # first made it; nobody removes it now


def test_remove_busy_raises_naming_the_cgroup(tmp_path: Path) -> None:
    layout = fake_v1(tmp_path)
    cg = create_pod_cgroup("/kubepods/pod1", layout=layout)
    busy = tmp_path / "memory" / "kubepods" / "pod1"
    (busy / "cgroup.procs").write_text("4242\n")  # a plain file keeps the dir non-empty
    with pytest.raises(Internal) as info:
        cg.remove(retries=2, delay=0)
    assert str(busy) in info.value.message and "4242" in info.value.message
    assert busy in cg.created and (tmp_path / "memory" / "kubepods") in cg.created
    (busy / "cgroup.procs").unlink()
    cg.remove()
    assert not (tmp_path / "memory" / "kubepods").exists()


def test_v2_enables_controllers_and_uses_a_leaf(tmp_path: Path) -> None:
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids rdma\n")
    (root / "cgroup.subtree_control").write_text("cpu memory\n")
    layout = CgroupLayout(V2, {}, root)
    cg = create_pod_cgroup("/kubepods/pod1", layout=layout)
    assert cg.dirs == [root / "kubepods" / "pod1"]
    # Only controllers that are available and not yet enabled are written.
    assert (root / "cgroup.subtree_control").read_text() == "+cpuset +io +pids"
    assert cg.process_dirs() == [root / "kubepods" / "pod1" / V2_LEAF]


def test_plan_lists_what_create_would_make_so_a_crash_in_between_is_undone(
    tmp_path: Path,
) -> None:
    layout = fake_v1(tmp_path)
    (tmp_path / "memory" / "kubepods").mkdir()  # made by someone else
    plan = plan_pod_cgroup("/kubepods/pod1", layout=layout)
    assert not any(d.exists() for d in plan.created)
    create_pod_cgroup("/kubepods/pod1", layout=layout)  # then the daemon dies
    assert tmp_path / "memory" / "kubepods" not in plan.created
    PodCgroup.from_record(plan.to_record()).remove()
    assert [p for p in tmp_path.rglob("pod1")] == []
    assert (tmp_path / "memory" / "kubepods").is_dir()
    assert not (tmp_path / "pids" / "kubepods").exists()


def test_v2_removes_a_leaf_made_after_the_record_was_saved(tmp_path: Path) -> None:
    root = tmp_path / "unified"
    root.mkdir()
    layout = CgroupLayout(V2, {}, root)
    saved = create_pod_cgroup("/kubepods/pod1", layout=layout).to_record()
    (root / "kubepods" / "pod1" / V2_LEAF).mkdir()  # add_process, then the daemon dies
    PodCgroup.from_record(saved).remove(retries=1)
    assert not (root / "kubepods").exists()
