"""What a test daemon left on the host, and putting the host back: shared by test Envs.

An Env that runs a peapod under ``base`` (with its ``cgroup_parent``) inherits these:
``mounts`` and ``our_processes`` name what is still there, ``container_dirs`` the
container state directories, and ``sweep`` removes everything whatever a test left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from conmon import procs
from sandbox.cgroup_layout import detect_layout
from sandbox.cgroups import hierarchy_roots
from sandbox.mounts import umount_all
from support.daemon import Peapod

RUNC = shutil.which("runc", path="/usr/sbin:/usr/bin") or "/usr/sbin/runc"


class DaemonLeftovers:
    """Leftover readers and the sweep for an Env with ``base``, ``peapod``, ``cgroup_parent``."""

    base: Path
    peapod: Peapod
    cgroup_parent: str

    def runtime_roots(self) -> list[Path]:
        """The runtime state roots (runc --root) the daemon's handlers use."""
        raise NotImplementedError

    def remove_all(self) -> None:
        """Remove every pod through the CRI."""
        raise NotImplementedError

    def mounts(self) -> list[str]:
        prefix = str(self.base) + "/"
        with open("/proc/self/mountinfo") as f:
            return [ln.split()[4] for ln in f if ln.split()[4].startswith(prefix)]

    def our_processes(self) -> list[int]:
        """conmon and runtime processes started for this daemon (their argv names our dirs)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and b"peapod" not in argv[0] and any(str(self.base).encode() in a
                                                          for a in argv):  # fmt: skip
                found.append(int(entry))
        if self.peapod.proc is not None:
            found = [p for p in found if p != self.peapod.proc.pid]
        return found

    def container_dirs(self) -> list[str]:
        out = []
        for d in (self.peapod.root / "containers", self.peapod.runroot / "containers"):
            if d.is_dir():
                out += [str(p) for p in d.iterdir()]
        return out

    def sweep(self) -> None:
        """Put the machine back as found, whatever a test left."""
        with contextlib.suppress(Exception):
            if self.peapod.proc is not None:
                self.remove_all()
        self.peapod.stop(signal.SIGKILL)
        for pid in self.our_processes():
            start = procs.start_ticks(pid)
            if start is not None:
                procs.wait_gone(procs.kill_tree(pid, not_before_ticks=start), 5)
        for root in self.runtime_roots():
            if root.is_dir():
                for state in root.iterdir():
                    subprocess.run([RUNC, f"--root={root}", "delete", "--force", state.name],
                                   capture_output=True, check=False)  # fmt: skip
        for point in sorted(self.mounts(), key=len, reverse=True):
            umount_all(Path(point))
        for root in hierarchy_roots(detect_layout()):
            top = root / self.cgroup_parent
            if top.is_dir():
                for sub in sorted((p for p in top.rglob("*") if p.is_dir()),
                                  key=lambda p: len(p.parts), reverse=True):  # fmt: skip
                    with contextlib.suppress(OSError):
                        sub.rmdir()
                with contextlib.suppress(OSError):
                    top.rmdir()
        self.peapod.cleanup()
