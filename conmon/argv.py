"""Building conmon's command line and environment.

Two modes: *create* (conmon double-forks, runs ``<runtime> create`` and stays
as the container's monitor) and *exec --sync* (conmon runs ``<runtime> exec
--detach``, waits for the process and reports its exit code).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from base.errors import InvalidArgument
from conmon.paths import MonitorPaths, validate_id

LOG_LEVELS = ("error", "warn", "info", "debug", "trace")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYNC_PIPE_ENV = "_OCI_SYNCPIPE"
START_PIPE_ENV = "_OCI_STARTPIPE"
# conmon reopens (truncates) the log when a write would pass the limit; below
# one read buffer (8192 bytes) a single chunk could never be written.
MIN_LOG_SIZE_MAX = 8192
# conmon parses -T as a C int; requests get less, for the backstop peapod adds.
C_INT_MAX = 2**31 - 1
MAX_EXEC_TIMEOUT = C_INT_MAX - 60


@dataclass(frozen=True)
class CreateOptions:
    """How conmon should set up a container's stdio, logs and cgroups."""

    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    log_level: str = "info"
    log_size_max: int = -1
    systemd_cgroup: bool = False
    syslog: bool = True
    no_pivot: bool = False


def _check_log_level(level: str) -> str:
    if level not in LOG_LEVELS:
        raise InvalidArgument(f"conmon log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def create_argv(
    monitor_path: str,
    runtime_path: str,
    runtime_root: str,
    ctr_id: str,
    name: str,
    paths: MonitorPaths,
    opts: CreateOptions,
) -> list[str]:
    """conmon's argv to create ``ctr_id`` from the bundle in ``paths``."""
    validate_id(ctr_id)
    argv = [
        monitor_path,
        "-b", paths.bundle,
        "-c", ctr_id,
        "-u", ctr_id,
        "-n", name or ctr_id,
        "-r", runtime_path,
        "--runtime-arg", f"--root={runtime_root}",
        "-p", paths.pidfile,
        "-P", paths.conmon_pidfile,
        "-l", paths.log_path,
        "--exit-dir", paths.exit_dir,
        "--persist-dir", paths.persist_dir,
        "--socket-dir-path", paths.socket_dir,
        "--log-level", _check_log_level(opts.log_level),
    ]  # fmt: skip
    if opts.syslog:
        argv.append("--syslog")
    if opts.systemd_cgroup:
        argv.append("-s")
    if opts.log_size_max >= 0:
        if opts.log_size_max < MIN_LOG_SIZE_MAX:
            raise InvalidArgument(
                f"log_size_max {opts.log_size_max} is below the minimum {MIN_LOG_SIZE_MAX} bytes"
            )
        argv += ["--log-size-max", str(opts.log_size_max)]
    if opts.no_pivot:
        argv.append("--no-pivot")
    if opts.tty:
        argv.append("-t")
    if opts.stdin:
        argv.append("-i")
        if not opts.stdin_once:
            argv.append("--leave-stdin-open")
    return argv


def exec_sync_argv(
    monitor_path: str,
    runtime_path: str,
    runtime_root: str,
    ctr_id: str,
    *,
    process_spec_path: str,
    pidfile: str,
    log_path: str,
    timeout_s: int | None,
    log_global_size_max: int,
    log_level: str = "error",
) -> list[str]:
    """conmon's argv for a synchronous exec into the running ``ctr_id``.

    No bundle is given, so conmon sets up no attach socket and no FIFOs, and
    ``--no-sync-log`` skips an fsync of a log file that is read at once and
    deleted.
    """
    validate_id(ctr_id)
    argv = [
        monitor_path,
        "-c", ctr_id,
        "-r", runtime_path,
        "--runtime-arg", f"--root={runtime_root}",
        "-e",
        "--sync",
        "--exec-process-spec", process_spec_path,
        "-p", pidfile,
        "-l", log_path,
        "--log-global-size-max", str(log_global_size_max),
        "--log-level", _check_log_level(log_level),
        "--no-sync-log",
    ]  # fmt: skip
    if timeout_s:
        if not 0 < timeout_s <= C_INT_MAX:
            raise InvalidArgument(f"exec timeout {timeout_s}s is outside 1-{C_INT_MAX} seconds")
        argv += ["-T", str(timeout_s)]
    return argv


def monitor_env(
    base: Mapping[str, str] | None, sync_fd: int, start_fd: int | None = None
) -> dict[str, str]:
    """conmon's environment: ``base`` plus the pipe fd numbers it must use."""
    env = dict(base) if base is not None else {"PATH": DEFAULT_PATH}
    env.setdefault("PATH", DEFAULT_PATH)
    env[SYNC_PIPE_ENV] = str(sync_fd)
    if start_fd is None:
        env.pop(START_PIPE_ENV, None)
    else:
        env[START_PIPE_ENV] = str(start_fd)
    return env
