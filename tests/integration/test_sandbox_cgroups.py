"""Real pod cgroups on this host's hierarchies (v1/hybrid here; v2 is not testable here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from base.errors import Internal
from sandbox.cgroup_layout import V2, detect_layout
from sandbox.cgroups import PodCgroup, create_pod_cgroup, hierarchy_roots

REPO = Path(__file__).resolve().parents[2]


def _rmtree_cgroup(d: Path) -> None:
    """rmdir a cgroup subtree bottom-up (cgroup dirs hold only control files)."""
    if not d.is_dir():
        return
    for child in d.iterdir():
        if child.is_dir():
            _rmtree_cgroup(child)
    os.rmdir(d)


@pytest.fixture
def top() -> Iterator[str]:
    """A unique top-level cgroup name; whatever is left under it is removed afterwards."""
    name = f"peapod-test-{uuid.uuid4().hex[:12]}"
    try:
        yield name
    finally:
        for root in hierarchy_roots(detect_layout()):
            _rmtree_cgroup(root / name)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(["sleep", "300"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def test_layout_here_is_hybrid_v1() -> None:
    layout = detect_layout()
    assert layout.version != V2
    for ctl in ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer"):
        assert (layout.v1[ctl] / "cgroup.procs").is_file()


def test_create_add_remove(top: str, sleeper: subprocess.Popen[bytes]) -> None:
    layout = detect_layout()
    roots = hierarchy_roots(layout)
    cg = create_pod_cgroup(f"/{top}/besteffort/pod1")
    assert cg.dirs == [root / top / "besteffort" / "pod1" for root in roots]
    assert all((d / "cgroup.procs").is_file() for d in cg.dirs)
    assert len(cg.created) == 3 * len(roots)
    cpuset_pod = layout.v1["cpuset"] / top / "besteffort" / "pod1"
    root_cpus = (layout.v1["cpuset"] / "cpuset.cpus").read_text().strip()
    assert root_cpus and (cpuset_pod / "cpuset.cpus").read_text().strip() == root_cpus
    assert (cpuset_pod / "cpuset.mems").read_text().strip()

    cg.add_process(sleeper.pid)
    lines = Path(f"/proc/{sleeper.pid}/cgroup").read_text().splitlines()
    in_pod = [line for line in lines if line.endswith(f"/{top}/besteffort/pod1")]
    assert len(in_pod) == len(roots)
    assert cg.pids() == {sleeper.pid}

    with pytest.raises(Internal) as info:
        cg.remove(retries=2, delay=0.01)
    assert str(sleeper.pid) in info.value.message and top in info.value.message
    assert all(d.is_dir() for d in cg.dirs)

    sleeper.kill()
    sleeper.wait()
    cg.remove()
    assert cg.created == []
    assert not any((root / top).exists() for root in roots)


def test_existing_parents_are_kept(top: str) -> None:
    roots = hierarchy_roots(detect_layout())
    for root in roots:
        (root / top).mkdir()
    cg = create_pod_cgroup(f"/{top}/pod1")
    assert cg.created == cg.dirs
    cg.remove()
    assert all((root / top).is_dir() and not (root / top / "pod1").exists() for root in roots)


def test_a_parent_made_but_not_yet_filled_by_another_pod_is_filled(
    top: str, sleeper: subprocess.Popen[bytes]
) -> None:
    """Two pods created at once under a new parent: the one that loses the mkdir race
    must not copy the parent's still-empty cpuset (a task there fails with ENOSPC)."""
    cpuset = detect_layout().v1["cpuset"]
    (cpuset / top).mkdir()  # as the other RunPodSandbox leaves it between mkdir and copy
    assert (cpuset / top / "cpuset.cpus").read_text().strip() == ""
    cg = create_pod_cgroup(f"/{top}/pod1")
    assert (cpuset / top / "pod1" / "cpuset.cpus").read_text().strip()
    cg.add_process(sleeper.pid)  # ENOSPC here if the pod's cpuset were empty
    assert cg.pids() == {sleeper.pid}


def test_concurrent_pods_under_a_new_parent_all_take_processes(top: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    procs = [subprocess.Popen(["sleep", "300"]) for _ in range(8)]
    try:
        with ThreadPoolExecutor(8) as pool:
            cgs = list(pool.map(lambda i: create_pod_cgroup(f"/{top}/shared/pod{i}"), range(8)))
        for cg, proc in zip(cgs, procs, strict=True):
            cg.add_process(proc.pid)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_remove_after_restart_from_record(top: str) -> None:
    code = (
        "import json; from sandbox.cgroups import create_pod_cgroup; "
        f"print(json.dumps(create_pod_cgroup('/{top}/burstable/pod2').to_record()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True
    ).stdout
    cg = PodCgroup.from_record(json.loads(out))
    assert all(d.is_dir() for d in cg.dirs)
    cg.remove()
    assert not any((root / top).exists() for root in hierarchy_roots(detect_layout()))


def test_systemd_slice_name(top: str) -> None:
    base = top.replace("-", "")
    slice_top = f"{base}.slice"
    cg = create_pod_cgroup(f"{base}-pod3.slice", driver="systemd")
    assert cg.path == f"/{slice_top}/{base}-pod3.slice"
    assert all(d.is_dir() for d in cg.dirs)
    try:
        cg.remove()
        assert not any((r / slice_top).exists() for r in hierarchy_roots(detect_layout()))
    finally:
        for root in hierarchy_roots(detect_layout()):
            _rmtree_cgroup(root / slice_top)
