"""Reading the small files conmon and the runtime leave behind.

pidfiles hold a decimal pid; exit files hold a decimal status (the exit code,
128+signal, or -1 when conmon could not tell); the ``oom`` marker is empty.
conmon writes exit files atomically (temporary file + rename).
"""

from __future__ import annotations

import contextlib
import os

from base.errors import DataLoss
from conmon.paths import exit_file_path

EXIT_FILE = "exit"
OOM_FILE = "oom"


def _read_int(path: str, what: str) -> int | None:
    """The integer in ``path``, None if the file is missing or still empty."""
    try:
        with open(path, "rb") as f:
            raw = f.read(64)
    except FileNotFoundError:
        return None
    text = raw.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise DataLoss(f"{what} {path} holds {raw[:32]!r}, not a number") from None


def read_pidfile(path: str) -> int | None:
    """The pid in a pidfile, or None if it does not exist (yet)."""
    pid = _read_int(path, "pidfile")
    if pid is not None and pid <= 0:
        raise DataLoss(f"pidfile {path} holds an invalid pid {pid}")
    return pid


def read_exit_file(exit_dir: str, ctr_id: str) -> int | None:
    """The status conmon wrote to ``<exit_dir>/<ctr_id>``, None if not there."""
    return _read_int(exit_file_path(exit_dir, ctr_id), "exit file")


def remove_exit_file(exit_dir: str, ctr_id: str) -> None:
    """Delete the shared exit file once its event has been handled."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(exit_file_path(exit_dir, ctr_id))


def read_persisted_exit(persist_dir: str) -> tuple[int, int] | None:
    """``(status, finished_at_ns)`` from ``<persist_dir>/exit``, or None.

    The finish time is the file's mtime, which conmon sets when it writes it.
    """
    path = os.path.join(persist_dir, EXIT_FILE)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    code = _read_int(path, "exit file")
    if code is None:
        return None
    return code, st.st_mtime_ns


def oom_killed(persist_dir: str) -> bool:
    """True if conmon saw an OOM kill in the container's memory cgroup."""
    return os.path.exists(os.path.join(persist_dir, OOM_FILE))
