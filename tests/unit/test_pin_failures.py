"""Pinning a pod's namespaces and ID-mapping mounts when something fails on the way:
the error a caller gets, and nothing left behind (pin files, helper processes).

Real kernel calls (open_tree, unshare's helper) as root; the failures are forced.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from base.cancel import CallContext
from base.errors import DeadlineExceeded, FailedPrecondition, Internal
from sandbox import userns
from sandbox.idmap import idmapped_clone
from sandbox.idmappings import IdMapping, UserNamespaceMappings
from sandbox.namespaces import pin_namespaces, prepare_pins

MAPPINGS = UserNamespaceMappings((IdMapping(0, 200000, 65536),), (IdMapping(0, 300000, 65536),))


@pytest.fixture(autouse=True)
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("these tests make mounts and namespaces: run them as root")


def unmakeable(ns_dir: Path, kind: str) -> None:
    """Make the pin file of ``kind`` impossible to create: a symlink to a missing dir."""
    ns_dir.mkdir(parents=True, exist_ok=True)
    (ns_dir / kind).symlink_to(ns_dir / "missing" / kind)


def test_a_failure_partway_through_preparing_pins_leaves_no_pin_file(tmp_path: Path) -> None:
    ns_dir = tmp_path / "ns"
    paths = {"net": ns_dir / "net", "ipc": ns_dir / "missing" / "ipc", "uts": ns_dir / "uts"}
    with pytest.raises(Internal, match=r"ipc namespace .*No such file"):
        prepare_pins(ns_dir, paths)
    assert list(ns_dir.iterdir()) == []


def test_pin_namespaces_leaves_nothing_when_a_pin_file_cannot_be_made(tmp_path: Path) -> None:
    ns_dir = tmp_path / "ns"
    unmakeable(ns_dir, "uts")
    with pytest.raises(Internal, match=r"uts namespace .*not a file"):
        pin_namespaces(ns_dir, {"net", "ipc", "uts"})
    assert [p.name for p in ns_dir.iterdir()] == ["uts"]  # only what was there before


def test_a_user_namespace_helper_that_hangs_is_a_deadline_and_is_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper says something else than ready and never exits: the call ends at its
    deadline with DeadlineExceeded, the helper killed and waited for, no pin file left."""
    started: list[subprocess.Popen[bytes]] = []
    real = subprocess.Popen

    def helper(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        proc = real(["sh", "-c", "echo not-ready; exec sleep 100"], **kw)
        started.append(proc)
        return proc

    monkeypatch.setattr(userns.subprocess, "Popen", helper)
    ns_dir = tmp_path / "ns"
    with pytest.raises(DeadlineExceeded, match="user namespace"):
        userns.pin_in_user_namespace(ns_dir, {"net"}, MAPPINGS,
                                     ctx=CallContext.with_timeout(1.0))  # fmt: skip
    [proc] = started
    assert proc.returncode is not None  # killed and reaped: no zombie, no sleeper
    assert list(ns_dir.iterdir()) == []


def test_a_vanished_pinned_user_namespace_is_a_failed_precondition(tmp_path: Path) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    missing = tmp_path / "ns" / "user"
    with pytest.raises(FailedPrecondition) as info:
        idmapped_clone(source, target, missing)
    assert str(missing) in info.value.message and "no longer" in info.value.message
    assert not os.path.ismount(target)
