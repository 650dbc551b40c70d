"""``peapod status``'s pieces: the daemon's state from status.json, the database, the text."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from base.db import Database
from cri import status_file, status_report
from cri.status_report import NOT_RUNNING, NOT_SERVING, SERVING
from sandbox import procs


def doc(state: str = status_file.SERVING, pid: int | None = None, **kw: Any) -> dict[str, Any]:
    pid = os.getpid() if pid is None else pid
    base = {"format": status_file.FORMAT, "state": state, "pid": pid,
            "pid_start_time": procs.start_time(pid), "version": "0.1.0", "listen": "/nowhere",
            "started_at": time.time() - 3700, "updated_at": time.time(), "error": ""}  # fmt: skip
    return {**base, **kw}


def test_no_status_file_means_not_running(tmp_path: Path) -> None:
    got = status_report._daemon(None, tmp_path / "status.json", "/s")
    assert got["state"] == NOT_RUNNING and str(tmp_path) in got["detail"]


def test_a_clean_stop_says_when_and_why(tmp_path: Path) -> None:
    got = status_report._daemon(doc(status_file.STOPPED, error="port in use"), tmp_path, "/s")
    assert got["state"] == NOT_RUNNING
    assert got["detail"].startswith("stopped at ") and "port in use" in got["detail"]


def test_a_vanished_pid_is_a_crash_not_a_stop(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = doc(pid=dead.pid, pid_start_time=12345)
    got = status_report._daemon(stale, tmp_path, "/s")
    assert got["state"] == NOT_RUNNING and "without stopping cleanly" in got["detail"]
    # Same pid, other process (pid reuse or a reboot): the start time tells them apart.
    reused = doc(pid_start_time=(procs.start_time(os.getpid()) or 0) + 1)
    assert status_report._daemon(reused, tmp_path, "/s")["state"] == NOT_RUNNING


def test_serving_needs_the_state_and_a_socket_that_accepts(tmp_path: Path) -> None:
    path = tmp_path / "cri.sock"
    assert status_report._daemon(doc(listen=str(path)), tmp_path, str(path))["state"] == (
        NOT_SERVING)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        got = status_report._daemon(doc(listen=str(path)), tmp_path, str(path))
        assert got["state"] == SERVING and got["detail"] == "up 1h1m40s"
        starting = doc(status_file.STARTING, listen=str(path))
        assert status_report._daemon(starting, tmp_path, str(path))["state"] == NOT_SERVING
    assert status_report.EXIT_CODES == {SERVING: 0, NOT_SERVING: 1, NOT_RUNNING: 3}


def fill(db: Database) -> None:
    with db.transaction() as tx:
        for i, state in enumerate(("ready", "ready", "notready")):
            tx.execute("INSERT INTO sandboxes VALUES (?, ?, ?, 0, '{}')", (f"p{i}", f"n{i}", state))
        tx.execute("INSERT INTO containers VALUES ('c', 'p0', 'cn', 'running', 0, '{}')")


def test_database_counts_beside_a_live_writer_and_after_it_closed(tmp_path: Path) -> None:
    path = tmp_path / "peapod.db"
    assert status_report._database(path)["database"]["error"] == "no database yet"
    db = Database(path)
    try:
        fill(db)
        live = status_report._database(path)
        assert live["pods"] == {"ready": 2, "notready": 1}
        assert live["containers"] == {"running": 1} and live["images"] == 0
        assert "peapod.db-wal" in live["database"]["files"]
    finally:
        db.close()
    closed = status_report._database(path)
    assert closed["pods"] == {"ready": 2, "notready": 1} and closed["database"]["error"] == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["peapod.db"]


def test_an_unreadable_database_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "peapod.db"
    path.write_bytes(b"not sqlite at all" * 100)
    got = status_report._database(path)
    assert got["database"]["error"].startswith("cannot read: ") and got["pods"] == {}


def test_render_reports_each_section() -> None:
    report = {
        "peapod": "0.1.0",
        "daemon": {"state": SERVING, "detail": "up 5m0s", "version": "0.1.0", "pid": 42,
                   "socket": "/run/peapod/peapod.sock"},
        "config_sources": ["/etc/peapod/peapod.yaml"],
        "config_error": "/etc/peapod/peapod.yaml: unknown key 'x'",
        "log_level": "info",
        "seccomp_profile": "built-in",
        "runtime_handlers": [
            {"name": "runc", "default": True, "runtime_path": "/usr/sbin/runc",
             "features": {"recursive_read_only_mounts": True, "user_namespaces": False}},
            {"name": "crun", "default": False, "runtime_path": "/usr/bin/crun",
             "features": None},
        ],
        "network": {"ready": False, "reason": "NetworkPluginNotReady", "message": "no config"},
        "pods": {"ready": 2}, "containers": {}, "images": 3,
        "database": {"path": "/var/lib/peapod/peapod.db", "bytes": 4096,
                     "files": {"peapod.db": 4096}, "error": ""},
        "reloads": [
            {"at": 0, "ok": True, "applied": ["log_level"], "needs_restart": ["listen"],
             "error": ""},
            {"at": 60, "ok": False, "applied": [], "needs_restart": [], "error": "bad yaml"},
        ],
    }  # fmt: skip
    assert status_report.render(report).splitlines() == [
        "daemon:      peapod 0.1.0 serving on /run/peapod/peapod.sock (pid 42): up 5m0s",
        "config:      /etc/peapod/peapod.yaml",
        "             ERROR, the files no longer load: /etc/peapod/peapod.yaml: unknown key 'x'",
        "log level:   info",
        "handlers:    runc (default): /usr/sbin/runc; recursive read only mounts",
        "             crun: /usr/bin/crun; features not probed yet",
        "seccomp:     RuntimeDefault profile built-in",
        "network:     NOT READY (NetworkPluginNotReady): no config",
        "pods:        2 (ready 2)",
        "containers:  0",
        "images:      3",
        "database:    /var/lib/peapod/peapod.db: 4.0 KiB (peapod.db 4.0 KiB)",
        "reloads:     1970-01-01T00:01:00Z FAILED, running configuration kept: bad yaml",
        "             1970-01-01T00:00:00Z ok: applied log_level; changed but needing a "
        "restart: listen",
    ]
