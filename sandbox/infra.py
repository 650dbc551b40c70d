"""The infra process of a pod that shares one PID namespace among its containers.

Which process holds the PID namespace, and why: ``catatonit -P`` is PID 1 of a
new PID namespace and holds it. A PID namespace, unlike net/ipc/uts, cannot be
kept alive by bind-mounting its nsfs file: when its PID 1 exits the kernel
kills everything else in it and refuses new processes, so it lives exactly as
long as its PID 1. catatonit is a minimal init that pauses and reaps zombies.

It is started as ``nsenter [--user] --net --ipc --uts -- unshare --pid --fork
--kill-child catatonit -P``: nsenter joins the pod's pinned namespaces (its user
namespace first, if it has one, so the new PID namespace belongs to it and
containers can mount /proc; nsenter then runs as that namespace's root) and
execs unshare (same pid), which creates the PID namespace and forks catatonit
into it, then waits. That unshare process (host PID namespace) is catatonit's
parent; ``--kill-child`` kills catatonit should unshare die. It runs in its own
session, so it outlives the daemon, and both are moved into the pod cgroup so
a service manager stopping the daemon's cgroup does not take the pod with it.
Containers join the namespace through ``/proc/<pid>/ns/pid``.

unshare is the daemon's child until the daemon exits, so its handle is kept
here (by pid and start time) for ``stop`` to reap it: a record-built
``InfraProcess`` carries no handle, and a dropped one would leave an unshare
zombie until the daemon's next subprocess.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.errors import Internal, InvalidArgument
from sandbox import procs
from sandbox.cgroups import PodCgroup
from sandbox.tools import find_tool

NS_KINDS = ("user", "net", "ipc", "uts")  # a pod's user namespace owns the PID one
START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
INFRA_LOG = "infra.log"  # in the pod directory; also how recovery finds an unrecorded infra

# unshare processes this daemon started and has not reaped: (pid, start time) -> handle.
_children: dict[tuple[int, int], subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


@dataclass
class InfraProcess:
    """A running infra process: catatonit's host pid and start time, and its parent's."""

    pid: int
    start_time: int
    parent_pid: int
    parent_start_time: int

    @property
    def pid_ns_path(self) -> Path:
        """The file containers pass to join the pod's PID namespace."""
        return Path(f"/proc/{self.pid}/ns/pid")

    def is_running(self) -> bool:
        """True if the recorded catatonit still runs (same pid *and* start time)."""
        return procs.start_time(self.pid) == self.start_time and procs.state(self.pid) != "Z"

    def _parent_running(self) -> bool:
        return (
            procs.start_time(self.parent_pid) == self.parent_start_time
            and procs.state(self.parent_pid) != "Z"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGKILL catatonit (which ends the PID namespace) and wait for it; idempotent."""
        if not procs.kill_and_wait(self.pid, self.start_time, timeout):
            raise Internal(f"infra process {self.pid} did not exit within {timeout}s of SIGKILL")
        # Its parent unshare exits as soon as catatonit is gone; reap it if it is ours.
        with _children_lock:
            popen = _children.pop((self.parent_pid, self.parent_start_time), None)
        if popen is not None:
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout)
        elif self._parent_running() and not procs.wait_exit(self.parent_pid, timeout):
            procs.kill_and_wait(self.parent_pid, self.parent_start_time, timeout)

    def to_record(self) -> dict[str, Any]:
        """A JSON-able record; ``from_record`` finds the same process again."""
        return {
            "pid": self.pid,
            "start_time": self.start_time,
            "parent_pid": self.parent_pid,
            "parent_start_time": self.parent_start_time,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> InfraProcess:
        """Rebuild from ``to_record`` output; check ``is_running()`` before trusting it."""
        return cls(
            pid=int(record["pid"]),
            start_time=int(record["start_time"]),
            parent_pid=int(record["parent_pid"]),
            parent_start_time=int(record["parent_start_time"]),
        )


def infra_argv(ns_paths: Mapping[str, Path]) -> list[str]:
    """The command line that starts catatonit in a new PID namespace inside ``ns_paths``."""
    unknown = set(ns_paths) - set(NS_KINDS)
    if unknown:
        raise InvalidArgument(f"infra process cannot join namespace kind(s) {sorted(unknown)}")
    argv: list[str] = []
    if ns_paths:
        argv += [find_tool("nsenter"), *(f"--{k}={ns_paths[k]}" for k in NS_KINDS if k in ns_paths)]
        argv.append("--")
    argv += [find_tool("unshare"), "--pid", "--fork", "--kill-child", find_tool("catatonit"), "-P"]
    return argv


def start_infra(
    ns_paths: Mapping[str, Path],
    cgroup: PodCgroup | None,
    log_path: Path,
    timeout: float = START_TIMEOUT,
) -> InfraProcess:
    """Start catatonit as PID 1 of a new PID namespace joined to the pod's namespaces.

    Its output goes to ``log_path``. Returns once catatonit runs; on failure
    nothing is left running.
    """
    argv = infra_argv(ns_paths)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        except OSError as exc:
            raise Internal(f"cannot start the pod's infra process: {exc}") from exc
    try:
        child = _wait_for_catatonit(popen, timeout, log_path)
        infra = InfraProcess(
            pid=child,
            start_time=_start_time(child),
            parent_pid=popen.pid,
            parent_start_time=_start_time(popen.pid),
        )
        if cgroup is not None:
            cgroup.add_process(popen.pid)
            cgroup.add_process(child)
    except BaseException:
        popen.kill()  # --kill-child takes catatonit with it
        popen.wait()
        raise
    with _children_lock:
        _children[(infra.parent_pid, infra.parent_start_time)] = popen
    return infra


def _start_time(pid: int) -> int:
    value = procs.start_time(pid)
    if value is None:
        raise Internal(f"infra process {pid} exited right after starting")
    return value


def _wait_for_catatonit(popen: subprocess.Popen[bytes], timeout: float, log_path: Path) -> int:
    """The host pid of catatonit once unshare has forked and exec'd it."""
    found: list[int] = []

    def ready() -> bool:
        if popen.poll() is not None:
            return True
        found[:] = [k for k in procs.children(popen.pid) if procs.comm(k) == "catatonit"]
        return bool(found)

    procs.wait_until(ready, timeout)
    if popen.returncode is not None:
        raise Internal(
            f"the pod's infra process exited with status {popen.returncode}: {_tail(log_path)}"
        )
    if not found:
        raise Internal(f"catatonit did not start within {timeout}s: {_tail(log_path)}")
    return found[0]


def _tail(path: Path, limit: int = 500) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return text[-limit:] or "(log empty)"
