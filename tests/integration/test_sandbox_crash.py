"""A daemon killed half-way through RunPodSandbox: the next start takes the pod apart.

The pod manager runs in-process with real namespaces, mounts, cgroups and infra
processes (host network, so no CNI). "Killed" is simulated by a step that raises
while the undo stack is disabled, so nothing is rolled back, as after SIGKILL.
A second manager on the same database then recovers. Everything is swept
afterwards even on failure.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from base.cancel import CallContext
from base.db import Database
from sandbox import build, procs
from sandbox.build import PodSettings
from sandbox.cgroup_layout import detect_layout
from sandbox.cgroups import hierarchy_roots
from sandbox.manager import PodManager
from sandbox.mounts import umount_all
from sandbox.network import PodNetwork
from sandbox.pod_config import POD, PodConfig, PodMetadata
from sandbox.record import CREATING
from sandbox.recover import recover_pods
from sandbox.store import SandboxStore
from sandbox.teardown import mounts_below
from sandbox.undo import UndoStack


class Killed(BaseException):
    """Stands for the daemon dying at this point."""


class Env:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.parent = f"peapod-test-crash-{secrets.token_hex(3)}"
        self.settings = PodSettings(pods_dir=base / "pods", default_cgroup_parent=self.parent)

    def manager(self) -> tuple[PodManager, Database]:
        db = Database(self.base / "state.db")
        network = PodNetwork(None, str(self.base / "net.d"))  # type: ignore[arg-type]
        return PodManager(self.settings, SandboxStore(db), network), db

    def cgroup_dirs(self) -> list[Path]:
        return [r / self.parent for r in hierarchy_roots(detect_layout())
                if (r / self.parent).exists()]

    def pod_cgroups(self) -> list[Path]:
        return [p for d in self.cgroup_dirs() for p in d.iterdir() if p.is_dir()]

    def sweep(self) -> None:
        for d in self.cgroup_dirs():
            for procs_file in d.rglob("cgroup.procs"):
                for pid in procs_file.read_text().split():
                    start = procs.start_time(int(pid))
                    if start is not None:
                        procs.kill_and_wait(int(pid), start, 5)
        for mount_point in sorted(mounts_below(self.base), key=len, reverse=True):
            umount_all(Path(mount_point))
        for d in self.cgroup_dirs():
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()),
                              key=lambda p: len(p.parts), reverse=True):
                os.rmdir(sub)
            os.rmdir(d)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.fail("needs root (namespaces, mounts, cgroups)")
    e = Env(tmp_path)
    try:
        yield e
    finally:
        e.sweep()


def config(name: str) -> PodConfig:
    return PodConfig(metadata=PodMetadata(name, secrets.token_hex(4), "test"),
                     host_network=True, pid_mode=POD)


@pytest.mark.parametrize(
    "step", ["after_cgroup", "mount_shm", "write_pod_files", "start_infra", "after_infra"]
)
def test_pod_half_built_when_the_daemon_died_is_taken_apart_on_restart(
    env: Env, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    real_start_infra = build.start_infra
    real_create_pod_cgroup = build.create_pod_cgroup
    infra_pids: list[int] = []

    def die(*args: Any, **kw: Any) -> Any:
        raise Killed(step)

    def infra_then_die(*args: Any, **kw: Any) -> Any:
        infra = real_start_infra(*args, **kw)
        infra_pids.append(infra.pid)
        if step == "after_infra":
            raise Killed(step)
        return infra

    def cgroup_then_die(*args: Any, **kw: Any) -> Any:
        real_create_pod_cgroup(*args, **kw)
        raise Killed(step)  # made in every hierarchy, not yet recorded

    monkeypatch.setattr(UndoStack, "rollback", lambda self: [])  # a dead daemon undoes nothing
    if step == "after_cgroup":
        monkeypatch.setattr(build, "create_pod_cgroup", cgroup_then_die)
    elif step == "start_infra":
        monkeypatch.setattr(build, "start_infra", die)
    elif step == "after_infra":
        monkeypatch.setattr(build, "start_infra", infra_then_die)
    else:
        monkeypatch.setattr(build, step, die)

    first, db = env.manager()
    with pytest.raises(Killed):
        first.run(config("half"), "", CallContext.with_timeout(30))
    first.close()
    db.close()
    assert list((env.settings.pods_dir).iterdir()) != []  # something was left behind
    assert len(env.pod_cgroups()) == len(hierarchy_roots(detect_layout()))
    monkeypatch.undo()

    second, db = env.manager()
    try:
        recover_pods(second)
        assert second.list() == []
        assert db.query("SELECT id FROM sandboxes") == []
        assert list(env.settings.pods_dir.iterdir()) == []
        assert mounts_below(env.base) == []
        assert env.pod_cgroups() == []
        for pid in infra_pids:
            assert procs.wait_until(lambda: procs.comm(pid) != "catatonit", 5)  # noqa: B023
        # The daemon works as before.
        pod = second.run(config("after"), "", CallContext.with_timeout(30))
        second.remove(pod.id, CallContext.with_timeout(30))
    finally:
        second.close()
        db.close()


def test_namespaces_pinned_but_not_yet_recorded_are_taken_apart_on_restart(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pod with its own net, IPC and UTS namespaces (and no CNI network): the daemon
    dies after pinning them, before the record lists them (the build writes it again
    only before CNI ADD); recovery finds the pins under the pod directory."""
    monkeypatch.setattr(UndoStack, "rollback", lambda self: [])
    monkeypatch.setattr(PodNetwork, "wait_ready", lambda self, ctx: None)  # no CNI step

    def die(*args: Any, **kw: Any) -> Any:
        raise Killed("mount_shm")

    monkeypatch.setattr(build, "mount_shm", die)
    first, db = env.manager()
    own = PodConfig(metadata=PodMetadata("ns", secrets.token_hex(4), "test"), pid_mode=POD)
    with pytest.raises(Killed):
        first.run(own, "", CallContext.with_timeout(30))
    first.close()
    db.close()
    [row] = [r for r in db_rows(env) if r["state"] == CREATING]
    assert row["ns_paths"] == {}  # not recorded
    assert len(mounts_below(env.base)) == 3  # but pinned
    monkeypatch.undo()
    second, db = env.manager()
    try:
        recover_pods(second)
        assert mounts_below(env.base) == []
        assert list(env.settings.pods_dir.iterdir()) == []
        assert env.pod_cgroups() == []
        assert db.query("SELECT id FROM sandboxes") == []
    finally:
        second.close()
        db.close()


def db_rows(env: Env) -> list[dict[str, Any]]:
    db = Database(env.base / "state.db")
    try:
        return [json.loads(r["record"]) for r in db.query("SELECT record FROM sandboxes")]
    finally:
        db.close()


def test_recovery_unmounts_what_an_unfinished_pod_had_not_recorded_yet(env: Env) -> None:
    manager, db = env.manager()
    try:
        pod_id = secrets.token_hex(32)
        rec = build.new_record(env.settings, pod_id, config("unrecorded"), "")
        assert rec.state == CREATING
        pod_dir = Path(rec.pod_dir)
        (pod_dir / "shm").mkdir(parents=True)
        from sandbox.shm import mount_shm

        mount_shm(pod_dir / "shm", 1 << 20)  # mounted, but the daemon died before saving it
        manager.store.save(rec)
        recover_pods(manager)
        assert mounts_below(env.base) == []
        assert not pod_dir.exists()
        assert db.query("SELECT id FROM sandboxes") == []
    finally:
        manager.close()
        db.close()
