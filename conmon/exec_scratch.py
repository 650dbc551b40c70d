"""ExecSync's scratch directories, and taking apart the ones a killed daemon left.

Each ExecSync works in its own ``peapod-exec-*`` directory under the exec dir:
the process spec, the output log, the pidfile runc writes for the exec'd
process and ``started`` (the boot time in clock ticks just before conmon ran).
A daemon killed mid-exec leaves the directory behind, maybe its conmon (whose
argv names the directory) and the exec'd process: conmon 2.1.6's ``-T`` backstop
kills only the process group, so that process may outlive conmon too.
``clean_leftovers`` runs before the daemon serves, when no ExecSync is in flight.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

from base.errors import PeapodError
from conmon import files, procs

log = logging.getLogger("peapod.conmon")

PREFIX = "peapod-exec-"
PIDFILE = "pid"
STARTED = "started"
# How much later than the pidfile's last write the exec'd process may have started
# (clock conversion and tick rounding); a pid reused after that is left alone.
_PIDFILE_SLACK = 1.0
_KILL_WAIT = 5.0


def make(work_dir: str | None) -> str:
    """A fresh scratch directory for one exec."""
    return tempfile.mkdtemp(prefix=PREFIX, dir=work_dir)


def mark_started(scratch: str, ticks: int) -> None:
    """Record that conmon is about to run; processes older than ``ticks`` are not ours."""
    with open(os.path.join(scratch, STARTED), "w") as f:
        f.write(f"{ticks}\n")


def clean_leftovers(work_dir: str) -> int:
    """Kill what interrupted execs left running and delete their directories; how many."""
    try:
        names = [n for n in os.listdir(work_dir) if n.startswith(PREFIX)]
    except FileNotFoundError:
        return 0
    for name in names:
        scratch = os.path.join(work_dir, name)
        killed = _kill_left_processes(scratch)
        if killed and not procs.wait_gone(killed, _KILL_WAIT):
            log.warning("processes of an interrupted exec outlived SIGKILL",
                        extra={"dir": scratch, "pids": killed})
        shutil.rmtree(scratch, ignore_errors=True)
        log.info("removed an interrupted exec's files", extra={"dir": scratch, "killed": killed})
    return len(names)


def _kill_left_processes(scratch: str) -> list[int]:
    """SIGKILL the exec's conmon and runtime (by argv) and the exec'd process (by pidfile)."""
    started = _read_started(scratch)
    if started is None:
        return []  # conmon never ran
    killed: list[int] = []
    for pid in procs.with_argument_under(scratch):
        killed += procs.kill_tree(pid, not_before_ticks=started)
    pidfile = os.path.join(scratch, PIDFILE)
    try:
        pid = files.read_pidfile(pidfile)
        written = os.stat(pidfile).st_mtime
    except (PeapodError, OSError):
        return killed
    if pid is not None:
        latest = procs.ticks_at(written + _PIDFILE_SLACK)
        killed += procs.kill_tree(pid, not_before_ticks=started, not_after_ticks=latest)
    return killed


def _read_started(scratch: str) -> int | None:
    try:
        with open(os.path.join(scratch, STARTED)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
