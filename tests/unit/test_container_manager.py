"""ContainerManager failure and recovery paths, against a scripted fake runtime.

The fake runtime logs each command and answers as told by a JSON file named
after the command (``rc``, ``stdout``, ``stderr``). A ``sleep`` child stands in
for both the container process and its conmon, so liveness checks see a live
process with the right start time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from base.cancel import CallContext
from base.db import Database
from base.errors import Internal, InvalidArgument, NotFound
from conmon import procs
from oci.container.exit_watcher import ExitWatcher
from oci.container.exits import MONITOR_GONE
from oci.container.manager import ContainerManager, ContainerSettings
from oci.container.record import CREATED, CREATING, EXITED, RUNNING, ContainerRecord
from oci.container.recover import recover_containers
from oci.container.runtimes import RuntimeHandler, RuntimeHandlers
from oci.container.store import ContainerStore
from oci.spec.inputs import DaemonFacts, Resources

POD = "f" * 64
CTR = "c" * 64

FAKE = """#!{python}
import json, os, sys
args = [a for a in sys.argv[1:] if not a.startswith("--root=")]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(" ".join(args) + "\\n")
if os.environ.get("FAKE_ROOTS"):
    with open(os.environ["FAKE_ROOTS"], "a") as f:
        f.write(" ".join(a for a in sys.argv[1:] if a.startswith("--root=")) + "\\n")
answer = os.path.join(os.environ["FAKE_DIR"], args[0])
if os.path.exists(answer):
    with open(answer) as f:
        spec = json.load(f)
    for path, text in spec.get("write", {{}}).items():
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.rename(path + ".tmp", path)
    if spec.get("sleep"):
        import time
        time.sleep(spec["sleep"])
    sys.stdout.write(spec.get("stdout", ""))
    if spec.get("stderr"):
        sys.stderr.write('time="x" level=error msg="' + spec["stderr"] + '"\\n')
    sys.exit(spec.get("rc", 0))
"""


class _Layers:
    def __init__(self) -> None:
        self.released: list[str] = []

    def release(self, holder: str) -> None:
        self.released.append(holder)


class _Images:
    def __init__(self) -> None:
        self.store = _Layers()


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.answers = tmp / "answers"
        self.answers.mkdir()
        self.log = tmp / "runtime.log"
        script = tmp / "fake-runtime"
        script.write_text(FAKE.format(python=sys.executable))
        script.chmod(0o755)
        env = {"FAKE_LOG": str(self.log), "FAKE_DIR": str(self.answers),
               "PATH": os.environ.get("PATH", "")}  # fmt: skip
        self.script = script
        handler = RuntimeHandler("fake", str(script), str(tmp / "root"), "/bin/false", env, 5.0)
        self.settings = ContainerSettings(
            containers_dir=tmp / "containers", bundles_dir=tmp / "bundles",
            exit_dir=tmp / "exits", socket_dir=tmp / "sockets", exec_dir=tmp / "exec",
        )  # fmt: skip
        db = Database(tmp / "state.db")
        with db.transaction() as tx:
            tx.execute(
                "INSERT INTO sandboxes (id, name, state, created_at, record) "
                "VALUES (?, ?, ?, ?, ?)",
                (POD, "k8s_pod", "ready", 1, "{}"),
            )
        self.store = ContainerStore(db)
        self.images = _Images()
        self.mgr = ContainerManager(
            self.settings, self.store, RuntimeHandlers({"fake": handler}, "fake"),
            self.images, None,  # type: ignore[arg-type]
        )  # fmt: skip
        self.children: list[subprocess.Popen[bytes]] = []

    def answer(self, command: str, rc: int = 0, stdout: str = "", stderr: str = "",
               **more: Any) -> None:  # fmt: skip
        (self.answers / command).write_text(
            json.dumps({"rc": rc, "stdout": stdout, "stderr": stderr, **more})
        )

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def live_process(self) -> tuple[int, int]:
        child = subprocess.Popen(["sleep", "60"])
        self.children.append(child)
        ticks = None
        while ticks is None:
            ticks = procs.start_ticks(child.pid)
        return child.pid, ticks

    def record(self, state: str, **changes: Any) -> ContainerRecord:
        pid, ticks = self.live_process()
        rec = ContainerRecord(
            id=CTR, sandbox_id=POD, name="k8s_c_p_ns_uid_0", metadata_name="c", attempt=0,
            state=state, created_at=time.time_ns(), runtime_handler="fake", image="busybox",
            image_id="sha256:1", image_ref="sha256:1",
            bundle=str(self.settings.bundles_dir / CTR),
            storage_dir=str(self.settings.containers_dir / CTR),
            log_path=str(self.tmp / "c.log"),
            pid=pid, pid_start=ticks, monitor_pid=pid, monitor_start=ticks,
        )  # fmt: skip
        rec = replace(rec, **changes)
        self.store.insert(rec)
        return rec

    def close(self) -> None:
        self.mgr.close()
        for child in self.children:
            child.kill()
            child.wait()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.close()


# ---- StartContainer failures ---------------------------------------------------


def test_failed_start_kills_what_the_record_says_exited(h: Harness) -> None:
    """A start that failed (or timed out after runc did its work) must not leave the
    container's process running behind a record that says it exited."""
    h.record(CREATED)
    h.answer("start", rc=1, stderr="exec format error")
    with pytest.raises(Internal, match="exec format error"):
        h.mgr.start(CTR, CallContext.with_timeout(10))
    rec = h.store.get(CTR)
    assert rec is not None
    assert (rec.state, rec.reason) == (EXITED, "StartError")
    assert f"kill --all {CTR} 9" in h.calls()


def test_failed_start_keeps_its_reason_when_the_kill_exit_is_seen_first(h: Harness) -> None:
    """The exit that the clean-up kill causes must not replace StartError."""
    h.record(CREATED)
    h.settings.exit_dir.mkdir()
    h.answer("start", rc=1, stderr="exec format error")
    # conmon reports the kill's exit; the runtime returns only after the watcher saw it.
    h.answer("kill", write={str(h.settings.exit_dir / CTR): "137"}, sleep=0.5)
    h.mgr.watch_exits()
    with pytest.raises(Internal):
        h.mgr.start(CTR, CallContext.with_timeout(10))
    rec = h.store.get(CTR)
    assert rec is not None
    assert (rec.state, rec.reason, rec.exit_code) == (EXITED, "StartError", 128)
    assert "exec format error" in rec.message


# ---- UpdateContainerResources ------------------------------------------------


def test_partial_update_keeps_the_limits_it_did_not_change(h: Harness) -> None:
    """The kubelet's CPU manager sends only cpuset_cpus; runc leaves the other limits
    alone, so ContainerStatus must keep reporting them ("limits currently applied")."""
    h.mgr.facts = DaemonFacts(bounding_set=frozenset(), cgroup_v2=True)
    before = asdict(Resources(cpu_shares=512, cpu_quota=50000, cpu_period=100000,
                              memory_limit_in_bytes=64 << 20, oom_score_adj=500,
                              unified={"memory.high": "1"}))  # fmt: skip
    h.record(RUNNING, resources=before)
    h.mgr.update_resources(CTR, Resources(cpuset_cpus="0"), CallContext.with_timeout(10))
    assert f"update --resources - {CTR}" in h.calls()
    rec = h.store.get(CTR)
    assert rec is not None
    assert rec.resources == {**before, "cpuset_cpus": "0"}

    h.mgr.update_resources(CTR, Resources(memory_limit_in_bytes=32 << 20, oom_score_adj=-5,
                                          unified={"memory.low": "2"}),
                           CallContext.with_timeout(10))  # fmt: skip
    rec = h.store.get(CTR)
    assert rec is not None
    # oom_score_adj is no cgroup limit: runc update does not change it.
    assert rec.resources == {**before, "cpuset_cpus": "0", "memory_limit_in_bytes": 32 << 20,
                             "unified": {"memory.high": "1", "memory.low": "2"}}  # fmt: skip


# ---- restart recovery ---------------------------------------------------------


def test_recover_finds_a_start_the_daemon_died_in(h: Harness) -> None:
    """The daemon was killed after runc start but before it stored "running"."""
    h.record(CREATED, started_at=time.time_ns() - 10**9)
    h.answer("state", stdout=json.dumps({"id": CTR, "status": "running"}))
    recover_containers(h.mgr)
    rec = h.store.get(CTR)
    assert rec is not None and rec.state == RUNNING


def test_recover_keeps_a_container_whose_start_never_ran(h: Harness) -> None:
    h.record(CREATED, started_at=time.time_ns() - 10**9)
    h.answer("state", stdout=json.dumps({"id": CTR, "status": "created"}))
    recover_containers(h.mgr)
    rec = h.store.get(CTR)
    assert rec is not None
    assert (rec.state, rec.started_at) == (CREATED, 0)


def test_recover_keeps_a_half_created_container_it_cannot_clean_up_removable(h: Harness) -> None:
    """If tearing down a half-created container fails at start-up, its record must not
    stay "creating": that is invisible, so RemoveContainer cannot reach it, and it
    holds the container's name until the next restart."""
    rec = h.record(CREATING, monitor_pid=0, monitor_start=0)
    h.answer("delete", rc=1, stderr="device or resource busy")
    recover_containers(h.mgr)
    got = h.store.get(CTR)
    assert got is not None
    assert (got.state, got.reason, got.exit_code) == (EXITED, "CreateError", 255)
    assert "device or resource busy" in got.message
    assert h.mgr.status(CTR).id == CTR
    (h.answers / "delete").unlink()
    h.mgr.remove(CTR, None)
    assert h.store.get(CTR) is None
    assert not Path(rec.bundle).exists()


def test_recover_asks_the_runtime_only_about_attempted_starts(h: Harness) -> None:
    h.record(CREATED)
    recover_containers(h.mgr)
    rec = h.store.get(CTR)
    assert rec is not None and rec.state == CREATED
    assert not any(c.startswith("state") for c in h.calls())


# ---- exit watching ---------------------------------------------------------------


def test_rescan_leaves_conmons_temporary_exit_files_alone(tmp_path: Path) -> None:
    """conmon writes <id>.XXXXXX, then renames it to <id>; a rescan (at start-up or
    after an inotify overflow) must not hand the temporary name over, or the handler
    deletes it as stale and conmon's rename - the exit - is lost."""
    (tmp_path / f"{CTR}.Ab12Cd").write_text("0")
    (tmp_path / ("d" * 64)).write_text("0")
    seen: list[str] = []
    got = threading.Event()

    def on_exit(name: str) -> None:
        seen.append(name)
        got.set()

    watcher = ExitWatcher(str(tmp_path), on_exit)
    watcher.start()
    try:
        assert got.wait(5)
        watcher.rescan()
    finally:
        watcher.close()
    assert seen == ["d" * 64, "d" * 64]


# ---- a handler removed from the config ----------------------------------------------


def test_stop_and_remove_use_the_runtime_recorded_at_create(h: Harness) -> None:
    """The container's handler ("gone") is no longer configured: stop and remove use
    the runtime, root and environment recorded with the container."""
    log = h.tmp / "gone.log"
    roots = h.tmp / "roots.log"
    env = {"FAKE_LOG": str(log), "FAKE_DIR": str(h.answers), "FAKE_ROOTS": str(roots)}
    rec = h.record(RUNNING, runtime_handler="gone", runtime_path=str(h.script),
                   runtime_root=str(h.tmp / "gone-root"), monitor_path="/bin/false",
                   monitor_env=env)  # fmt: skip
    with pytest.raises(InvalidArgument, match="not configured"):
        h.mgr.handlers.get("gone")
    for child in h.children:  # the kill ends the container (and its monitor)
        child.kill()
        child.wait()
    h.settings.exit_dir.mkdir()
    h.answer("kill", write={str(h.settings.exit_dir / CTR): "137"})
    h.mgr.stop(CTR, 0, CallContext.with_timeout(10))
    got = h.store.get(CTR)
    assert got is not None and (got.state, got.exit_code) == (EXITED, 137)
    h.mgr.remove(CTR, CallContext.with_timeout(10))
    assert h.store.get(CTR) is None and not Path(rec.bundle).exists()
    assert log.read_text().splitlines() == [f"kill --all {CTR} 9", f"delete --force {CTR}"]
    assert set(roots.read_text().splitlines()) == {f"--root={h.tmp / 'gone-root'}"}
    assert h.calls() == []  # the live handler was not used


def test_a_record_without_the_runtime_falls_back_to_the_live_handler(h: Harness) -> None:
    rec = h.record(RUNNING)
    data = json.loads(rec.to_json())
    for key in ("runtime_path", "runtime_root", "monitor_path", "monitor_env"):
        del data[key]
    old = ContainerRecord.from_json(json.dumps(data))
    assert old.runtime_path == ""
    assert h.mgr.runtime_for(old) is h.mgr.handlers.get("fake")
    assert h.mgr.runtime_for(replace(old, runtime_path="/x/runc", runtime_root="/r")) \
        .runtime_path == "/x/runc"


# ---- liveness probe ----------------------------------------------------------------


class _Observer:
    def __init__(self) -> None:
        self.monitors_lost = 0
        self.ooms: list[str] = []

    def oom_killed(self, namespace: str) -> None:
        self.ooms.append(namespace)

    def monitor_lost(self) -> None:
        self.monitors_lost += 1

    def exec_sync_finished(self, exit_code: int, timed_out: bool) -> None:
        pass


def _kill(h: Harness, pid: int) -> None:
    for child in h.children:
        if child.pid == pid:
            child.kill()
            child.wait()


def test_probe_reports_a_dead_monitor_once_while_the_container_runs(h: Harness) -> None:
    seen = _Observer()
    h.mgr.observer = seen
    mon, mon_start = h.live_process()
    h.record(RUNNING, monitor_pid=mon, monitor_start=mon_start)
    assert h.mgr.probe_monitor(CTR) == "ok"
    _kill(h, mon)
    h.mgr.probe_monitors()
    h.mgr.probe_monitors()
    assert seen.monitors_lost == 1
    assert h.mgr.probe_monitor(CTR) == "orphaned"
    rec = h.store.get(CTR)
    assert rec is not None and rec.state == RUNNING


def test_probe_marks_a_container_whose_monitor_and_process_vanished(h: Harness) -> None:
    h.settings.exit_dir.mkdir()
    h.record(RUNNING)  # one process stands for both
    for child in h.children:
        child.kill()
        child.wait()
    h.mgr.probe_monitors()
    rec = h.store.get(CTR)
    assert rec is not None
    assert (rec.state, rec.exit_code, rec.reason, rec.message) == (
        EXITED, 255, "Error", MONITOR_GONE)  # fmt: skip


def test_probe_records_the_exit_conmon_wrote(h: Harness) -> None:
    h.settings.exit_dir.mkdir()
    h.record(RUNNING)
    for child in h.children:
        child.kill()
        child.wait()
    (h.settings.exit_dir / CTR).write_text("3")
    assert h.mgr.probe_monitor(CTR) == "exited"
    rec = h.store.get(CTR)
    assert rec is not None and (rec.state, rec.exit_code, rec.reason) == (EXITED, 3, "Error")


class _Pods:
    """The pod lookup: pod POD in namespace "team-a", or no pod once ``gone``."""

    def __init__(self, gone: bool = False) -> None:
        self.gone = gone

    def get(self, id_or_prefix: str) -> Any:
        if self.gone or id_or_prefix != POD:
            raise NotFound(f"pod {id_or_prefix} not found")
        return SimpleNamespace(metadata=SimpleNamespace(namespace="team-a"))


def _oom_exit(h: Harness, **changes: Any) -> None:
    rec = h.record(RUNNING, **changes)
    os.makedirs(rec.persist_dir)
    Path(rec.persist_dir, "exit").write_text("137")
    Path(rec.persist_dir, "oom").write_text("")
    h.mgr.record_exit(CTR)
    got = h.store.get(CTR)
    assert got is not None and got.reason == "OOMKilled"


def test_an_oom_kill_is_reported_with_its_pods_namespace(h: Harness) -> None:
    seen = _Observer()
    h.mgr.observer = seen
    h.mgr.pods = _Pods()  # type: ignore[assignment]
    _oom_exit(h, labels={"io.kubernetes.pod.namespace": "from-label"})
    assert seen.ooms == ["team-a"]  # the pod's own metadata wins over a label


def test_an_oom_kill_of_a_container_whose_pod_is_gone_uses_the_kubelets_label(
    h: Harness,
) -> None:
    seen = _Observer()
    h.mgr.observer = seen
    h.mgr.pods = _Pods(gone=True)  # type: ignore[assignment]
    _oom_exit(h, labels={"io.kubernetes.pod.namespace": "from-label"})
    assert seen.ooms == ["from-label"]


def test_an_oom_kill_without_pod_or_label_is_reported_with_no_namespace(h: Harness) -> None:
    seen = _Observer()
    h.mgr.observer = seen
    _oom_exit(h)
    assert seen.ooms == [""]
