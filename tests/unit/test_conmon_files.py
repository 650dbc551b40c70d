"""pidfiles, exit files, the OOM marker and derived paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from base.errors import DataLoss, InvalidArgument
from conmon import files
from conmon.paths import MonitorPaths, attach_socket_path, attach_symlink_path


def test_pidfile(tmp_path: Path) -> None:
    p = tmp_path / "pidfile"
    assert files.read_pidfile(str(p)) is None
    p.write_text("")
    assert files.read_pidfile(str(p)) is None  # created but not yet written
    p.write_text("1234")
    assert files.read_pidfile(str(p)) == 1234
    for bad in ("abc", "0", "-5"):
        p.write_text(bad)
        with pytest.raises(DataLoss, match="pidfile"):
            files.read_pidfile(str(p))


def test_exit_files(tmp_path: Path) -> None:
    exits, persist = tmp_path / "exits", tmp_path / "persist"
    exits.mkdir()
    persist.mkdir()
    assert files.read_exit_file(str(exits), "c1") is None
    assert files.read_persisted_exit(str(persist)) is None
    (exits / "c1").write_text("137")
    (persist / "exit").write_text("-1")
    os.utime(persist / "exit", ns=(5 * 10**18, 1_700_000_000_123_456_789))
    assert files.read_exit_file(str(exits), "c1") == 137
    assert files.read_persisted_exit(str(persist)) == (-1, 1_700_000_000_123_456_789)
    files.remove_exit_file(str(exits), "c1")
    files.remove_exit_file(str(exits), "c1")  # idempotent
    assert files.read_exit_file(str(exits), "c1") is None
    with pytest.raises(InvalidArgument):
        files.read_exit_file(str(exits), "../c1")


def test_oom_marker(tmp_path: Path) -> None:
    assert not files.oom_killed(str(tmp_path))
    (tmp_path / "oom").touch()
    assert files.oom_killed(str(tmp_path))


def test_standard_paths() -> None:
    p = MonitorPaths.standard("/b", exit_dir="/e", persist_dir="/p", socket_dir="/s",
                              log_path="/l")  # fmt: skip
    assert (p.pidfile, p.conmon_pidfile, p.ctl_path) == (
        "/b/pidfile",
        "/b/conmon-pidfile",
        "/b/ctl",
    )
    assert p.exit_file("c1") == "/e/c1"
    assert p.attach_path("c1") == "/s/c1/attach"


def test_attach_symlink_is_shortened_like_conmon_does() -> None:
    sock_dir = "/" + "d" * 40
    cuuid = "c" * (107 - len(sock_dir) - 1)
    assert len(f"{sock_dir}/{cuuid}") == 107
    assert attach_symlink_path(sock_dir, cuuid) == f"{sock_dir}/{cuuid}"[:-1]
    assert attach_socket_path(sock_dir, cuuid) == f"{sock_dir}/{cuuid}"[:-1] + "/attach"
    assert attach_symlink_path(sock_dir, cuuid + "x") == f"{sock_dir}/{cuuid}x"
