"""Process-tree helpers on real (short-lived) host processes."""

from __future__ import annotations

import os
import subprocess
import time

from conmon import procs

TREE = "sleep 100 & setsid sh -c 'sleep 100 & wait' & wait"


def _wait_descendants(pid: int, n: int) -> list[int]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = procs.descendants(pid)
        if len(found) >= n:
            return found
        time.sleep(0.01)
    raise AssertionError(f"{pid} has only {procs.descendants(pid)}")


def test_kill_tree_reaches_setsid_descendants() -> None:
    root = subprocess.Popen(["sh", "-c", TREE])
    try:
        tree = _wait_descendants(root.pid, 3)
        killed = procs.kill_tree(root.pid)
        assert set(killed) >= {root.pid, *tree}
        root.wait(5)
        assert procs.wait_gone(tree, 5)
    finally:
        root.kill()
        root.wait()


def test_kill_tree_spares_an_older_process() -> None:
    p = subprocess.Popen(["sleep", "100"])
    try:
        assert procs.kill_tree(p.pid, not_before_ticks=procs.boot_ticks_now() + 10**6) == []
        assert procs.is_alive(p.pid)
        assert procs.start_ticks(p.pid) <= procs.boot_ticks_now()  # type: ignore[operator]
    finally:
        p.kill()
        p.wait()
    assert procs.kill_tree(p.pid) == []  # gone


def test_liveness_parent_and_memory() -> None:
    me = os.getpid()
    assert procs.is_alive(me) and procs.parent_pid(me) == os.getppid()
    mem = procs.memory_usage(me)
    assert mem is not None and mem.rss_kib >= mem.pss_kib > 0
    z = subprocess.Popen(["true"])
    while procs.is_alive(z.pid):  # becomes a zombie: not alive
        time.sleep(0.01)
    z.wait()
    assert procs.memory_usage(z.pid) is None and procs.parent_pid(z.pid) is None
