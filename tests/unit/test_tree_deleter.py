"""Collected trees are deleted off the caller's path, and waiting for that works."""

from __future__ import annotations

import time
from pathlib import Path

from oci.tree_deleter import TreeDeleter


def make_tree(root: Path, files: int) -> Path:
    for i in range(files):
        sub = root / f"d{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i}").write_bytes(b"x" * 4096)
    return root


def test_delete_returns_at_once_and_wait_idle_sees_every_tree_gone(tmp_path: Path) -> None:
    trees = [make_tree(tmp_path / f"t{n}", 400) for n in range(3)]
    deleter = TreeDeleter()
    start = time.perf_counter()
    deleter.delete(trees)
    queued_in = time.perf_counter() - start
    assert deleter.wait_idle(10)
    assert not any(t.exists() for t in trees)
    assert queued_in < 0.05, f"delete() took {queued_in:.3f}s; it must only queue"


def test_missing_paths_and_an_empty_list_are_fine(tmp_path: Path) -> None:
    deleter = TreeDeleter()
    deleter.delete([])
    assert deleter.wait_idle(1)
    deleter.delete([tmp_path / "never-existed"])
    assert deleter.wait_idle(5)
    deleter.delete([make_tree(tmp_path / "later", 5)])  # works again after going idle
    assert deleter.wait_idle(5) and not (tmp_path / "later").exists()
