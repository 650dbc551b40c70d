"""The infra process: catatonit as PID 1 of the pod's PID namespace, inside its other namespaces."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from base.errors import Internal
from sandbox import procs
from sandbox.cgroup_layout import detect_layout
from sandbox.cgroups import PodCgroup, create_pod_cgroup, hierarchy_roots
from sandbox.infra import InfraProcess, start_infra
from sandbox.mounts import umount_all
from sandbox.namespaces import KINDS, ns_inode, pin_namespaces

REPO = Path(__file__).resolve().parents[2]


def _rmtree_cgroup(d: Path) -> None:
    if not d.is_dir():
        return
    for child in d.iterdir():
        if child.is_dir():
            _rmtree_cgroup(child)
    os.rmdir(d)


def _kill_tree_in(cg: PodCgroup) -> None:
    for pid in cg.pids():
        start = procs.start_time(pid)
        if start is not None:
            procs.kill_and_wait(pid, start, 5)


class Pod:
    """Pinned namespaces and a pod cgroup, torn down by the fixture."""

    def __init__(self, root: Path) -> None:
        self.top = f"peapod-test-{uuid.uuid4().hex[:12]}"
        self.dir = root
        self.ns = pin_namespaces(root / "ns", {"net", "ipc", "uts"}, hostname="infra-pod")
        self.cgroup = create_pod_cgroup(f"/{self.top}/pod")
        self.log = root / "infra.log"


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[Pod]:
    p: Pod | None = None
    try:
        p = Pod(tmp_path)
        yield p
    finally:
        if p is not None:
            _kill_tree_in(p.cgroup)
            for root in hierarchy_roots(detect_layout()):
                for _ in range(50):
                    try:
                        _rmtree_cgroup(root / p.top)
                        break
                    except OSError:
                        time.sleep(0.02)
        for kind in KINDS:
            umount_all(tmp_path / "ns" / kind)


def nspid(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError("no NSpid line")


def test_catatonit_is_pid1_in_the_pod_namespaces(pod: Pod) -> None:
    infra = start_infra(pod.ns, pod.cgroup, pod.log)
    try:
        assert procs.comm(infra.pid) == "catatonit"
        assert nspid(infra.pid) == [infra.pid, 1]
        for kind in ("net", "ipc", "uts"):
            assert os.stat(f"/proc/{infra.pid}/ns/{kind}").st_ino == ns_inode(pod.ns[kind])
        assert os.readlink(infra.pid_ns_path) != os.readlink("/proc/self/ns/pid")
        assert {infra.pid, infra.parent_pid} <= pod.cgroup.pids()
        # A container joining via /proc/<pid>/ns/pid is a non-1 pid in that namespace.
        out = subprocess.run(
            [
                "nsenter",
                f"--pid={infra.pid_ns_path}",
                "--",
                "sh",
                "-c",
                "grep NSpid /proc/self/status",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        assert len(out) == 3 and int(out[2]) > 1
    finally:
        infra.stop()
    assert not infra.is_running()


def test_survives_dropped_handle_and_stop_ends_the_namespace(pod: Pod) -> None:
    infra = start_infra(pod.ns, pod.cgroup, pod.log)
    record = infra.to_record()
    del infra
    gc.collect()
    again = InfraProcess.from_record(record)
    assert again.is_running()
    member = subprocess.Popen(["nsenter", f"--pid={again.pid_ns_path}", "--", "sleep", "300"])
    try:
        assert procs.wait_until(lambda: len(procs.children(member.pid)) == 1, 5)
        again.stop()
        # The kernel kills everything in a PID namespace whose PID 1 died.
        assert member.wait(5) != 0
    finally:
        member.kill()
        member.wait()
    assert not again.is_running()
    again.stop()  # idempotent
    pod.cgroup.remove()


def test_outlives_the_process_that_started_it(pod: Pod) -> None:
    code = (
        "import json, sys; from pathlib import Path; "
        "from sandbox.namespaces import KINDS; from sandbox.cgroups import PodCgroup; "
        "from sandbox.infra import start_infra; "
        "a = json.loads(sys.argv[1]); "
        "i = start_infra({k: Path(v) for k, v in a['ns'].items()}, "
        "PodCgroup.from_record(a['cg']), Path(a['log'])); "
        "print(json.dumps(i.to_record()))"
    )
    arg = json.dumps(
        {
            "ns": {k: str(v) for k, v in pod.ns.items()},
            "cg": pod.cgroup.to_record(),
            "log": str(pod.log),
        }
    )
    starter = subprocess.run(
        [sys.executable, "-c", code, arg], check=True, cwd=REPO, capture_output=True, text=True
    )
    infra = InfraProcess.from_record(json.loads(starter.stdout))
    try:
        assert infra.is_running()
        assert nspid(infra.pid)[1:] == [1]
        stat = Path(f"/proc/{infra.parent_pid}/stat").read_text()
        assert int(stat[stat.rindex(")") + 2 :].split()[1]) != os.getpid()
    finally:
        infra.stop()
    assert not infra.is_running()
    assert procs.wait_until(lambda: not pod.cgroup.pids(), 5)


def test_pid_reuse_guard(pod: Pod) -> None:
    """A record whose pids now belong to other processes (same pid, other start) is inert."""
    infra = start_infra(pod.ns, None, pod.log)
    try:
        stale = {
            **infra.to_record(),
            "start_time": infra.start_time - 1,
            "parent_start_time": infra.parent_start_time - 1,
        }
        impostor = InfraProcess.from_record(stale)
        assert not impostor.is_running()
        impostor.stop(timeout=0.5)
        assert infra.is_running()
        assert procs.state(infra.parent_pid) in ("S", "R")
    finally:
        infra.stop()
    assert not infra.is_running()


def test_start_failure_leaves_nothing(pod: Pod) -> None:
    with pytest.raises(Internal) as info:
        start_infra({"net": pod.dir / "no-such-ns"}, pod.cgroup, pod.log)
    assert "nsenter" in info.value.message
    assert pod.cgroup.pids() == set()
