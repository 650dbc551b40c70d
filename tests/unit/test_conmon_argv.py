"""conmon command lines and environment."""

from __future__ import annotations

import pytest

from base.errors import InvalidArgument
from conmon.argv import (
    START_PIPE_ENV,
    SYNC_PIPE_ENV,
    CreateOptions,
    create_argv,
    exec_sync_argv,
    monitor_env,
)
from conmon.paths import MonitorPaths

PATHS = MonitorPaths.standard(
    "/run/b/c1", exit_dir="/run/exits", persist_dir="/var/p/c1", socket_dir="/run/s",
    log_path="/var/log/pods/x/0.log",
)  # fmt: skip


def _opt(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_create_argv_carries_every_path() -> None:
    argv = create_argv("/usr/bin/conmon", "/usr/sbin/runc", "/run/runc", "c1", "k8s_c", PATHS,
                       CreateOptions())  # fmt: skip
    assert argv[0] == "/usr/bin/conmon"
    expect = {
        "-b": "/run/b/c1", "-c": "c1", "-u": "c1", "-n": "k8s_c", "-r": "/usr/sbin/runc",
        "--runtime-arg": "--root=/run/runc", "-p": "/run/b/c1/pidfile",
        "-P": "/run/b/c1/conmon-pidfile", "-l": "/var/log/pods/x/0.log",
        "--exit-dir": "/run/exits", "--persist-dir": "/var/p/c1", "--socket-dir-path": "/run/s",
        "--log-level": "info",
    }  # fmt: skip
    assert {k: _opt(argv, k) for k in expect} == expect
    assert "--syslog" in argv
    for absent in ("-s", "-t", "-i", "--leave-stdin-open", "--log-size-max", "-e", "--sync"):
        assert absent not in argv


def test_create_argv_options() -> None:
    opts = CreateOptions(tty=True, stdin=True, stdin_once=False, log_size_max=8192,
                         systemd_cgroup=True, syslog=False, log_level="debug")  # fmt: skip
    argv = create_argv("conmon", "runc", "/r", "c1", "", PATHS, opts)
    assert {"-t", "-i", "--leave-stdin-open", "-s"} <= set(argv)
    assert "--syslog" not in argv
    assert _opt(argv, "--log-size-max") == "8192"
    assert _opt(argv, "-n") == "c1"  # name defaults to the id
    once = create_argv("conmon", "runc", "/r", "c1", "n", PATHS, CreateOptions(stdin=True,
                       stdin_once=True))  # fmt: skip
    assert "-i" in once and "--leave-stdin-open" not in once


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"log_size_max": 100}, "minimum"), ({"log_level": "loud"}, "log level")],
)
def test_create_argv_rejects_bad_options(kw: dict, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        create_argv("conmon", "runc", "/r", "c1", "n", PATHS, CreateOptions(**kw))


@pytest.mark.parametrize("bad", ["", "a/b", "..", "a b", "x\n"])
def test_ids_that_cannot_be_file_names_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        create_argv("conmon", "runc", "/r", bad, "n", PATHS, CreateOptions())


def test_exec_sync_argv() -> None:
    argv = exec_sync_argv("conmon", "runc", "/r", "c1", process_spec_path="/t/p.json",
                          pidfile="/t/pid", log_path="/t/log", timeout_s=7,
                          log_global_size_max=1000)  # fmt: skip
    assert {"-e", "--sync", "--no-sync-log"} <= set(argv)
    assert _opt(argv, "--exec-process-spec") == "/t/p.json"
    assert _opt(argv, "-T") == "7" and _opt(argv, "--log-global-size-max") == "1000"
    assert _opt(argv, "-p") == "/t/pid" and _opt(argv, "-l") == "/t/log"
    # No bundle: conmon then sets up no attach socket and no FIFOs.
    for absent in ("-b", "-P", "-u", "--socket-dir-path", "--exit-dir", "--syslog"):
        assert absent not in argv
    untimed = exec_sync_argv("conmon", "runc", "/r", "c1", process_spec_path="p", pidfile="q",
                             log_path="l", timeout_s=None, log_global_size_max=1)  # fmt: skip
    assert "-T" not in untimed


def test_monitor_env_names_the_pipe_fds() -> None:
    env = monitor_env({"FOO": "1", START_PIPE_ENV: "9"}, 5, 6)
    assert env == {"FOO": "1", "PATH": env["PATH"], SYNC_PIPE_ENV: "5", START_PIPE_ENV: "6"}
    no_start = monitor_env({START_PIPE_ENV: "9"}, 5)
    assert START_PIPE_ENV not in no_start and no_start[SYNC_PIPE_ENV] == "5"
    assert "/usr/bin" in monitor_env(None, 3)["PATH"]
