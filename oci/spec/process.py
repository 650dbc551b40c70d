"""The container process: argv, environment, working directory, rlimits, stop signal."""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Iterable, Sequence
from typing import Any

from base.errors import InvalidArgument
from base.text import check_no_nul, shorten

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The kernel's limit on one argv or environment string, its NUL included (32 pages).
MAX_ARG_STRLEN = 32 * 4096
# execve also fails once argv + envp (strings and pointers) pass ARG_MAX (a quarter of
# the stack limit); the margin leaves room for what the runtime's own exec adds.
_ARG_MAX_MARGIN = 32 << 10
_POINTER = 8


def exec_limit() -> int:
    """How many bytes of argv + envp a container process may have."""
    return max(os.sysconf("SC_ARG_MAX"), 128 << 10) - _ARG_MAX_MARGIN


def check_exec(argv: Sequence[str], env: Sequence[str], what: str = "the process") -> None:
    """Refuse an argv and environment execve would refuse (E2BIG) or cut (NUL bytes)."""
    total = _POINTER * (len(argv) + len(env) + 2)
    for kind, items in (("argument", argv), ("environment entry", env)):
        for item in items:
            check_no_nul(item, f"{what}'s {kind}")
            size = len(item.encode("utf-8", "surrogatepass")) + 1
            if size > MAX_ARG_STRLEN:
                raise InvalidArgument(
                    f"{what}'s {kind} {shorten(item, 32)} is {size - 1} bytes; the kernel "
                    f"takes at most {MAX_ARG_STRLEN - 1} per string"
                )
            total += size
    limit = exec_limit()
    if total > limit:
        raise InvalidArgument(
            f"{what}'s arguments and environment take {total} bytes; the kernel takes at "
            f"most {limit} (ARG_MAX)"
        )


def resolve_args(
    command: Sequence[str],
    args: Sequence[str],
    entrypoint: Sequence[str],
    cmd: Sequence[str],
) -> list[str]:
    """The process argv, combining request and image the way Kubernetes documents it.

    command given: command + args (the image's Cmd is not used); only args given: the
    image's Entrypoint + args; neither: Entrypoint + Cmd.
    """
    if command:
        argv = [*command, *args]
    elif args:
        argv = [*entrypoint, *args]
    else:
        argv = [*entrypoint, *cmd]
    if not argv:
        raise InvalidArgument(
            "no command specified: set command or args in the container config, "
            "or use an image with an Entrypoint or Cmd"
        )
    return argv


def _split_env(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    return key, value if sep else ""


def resolve_env(
    image_env: Iterable[str],
    request_env: Iterable[tuple[str, str]],
    *,
    hostname: str,
    tty: bool,
    home: str,
) -> list[str]:
    """The environment as "KEY=value": image first, then the request (which wins).

    PATH, HOME and (with a terminal) TERM get defaults when neither sets them; HOSTNAME
    is always the pod's hostname unless the request sets it itself.
    """
    env: dict[str, str] = {}
    for item in image_env:
        key, value = _split_env(item)
        if key:
            env[key] = value
    if hostname:
        env["HOSTNAME"] = hostname
    for key, value in request_env:
        if not key:
            raise InvalidArgument("an environment variable in the container config has no name")
        if "=" in key:
            raise InvalidArgument(f"environment variable name {key!r} must not contain '='")
        env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", home or "/")
    if tty:
        env.setdefault("TERM", "xterm")
    return [f"{key}={value}" for key, value in env.items()]


def resolve_cwd(request_dir: str, image_dir: str) -> str:
    """The working directory: the request's, else the image's, else "/"."""
    if request_dir:
        if not request_dir.startswith("/"):
            raise InvalidArgument(
                f"working_dir {request_dir!r} must be an absolute path inside the container"
            )
        return request_dir
    if image_dir:
        # Image configs occasionally carry relative dirs; they are relative to "/".
        return image_dir if image_dir.startswith("/") else "/" + image_dir
    return "/"


def nofile_rlimit(wanted: int, daemon_hard: int | None) -> dict[str, Any]:
    """RLIMIT_NOFILE for the container, never above the daemon's own hard limit.

    Raising a hard limit needs CAP_SYS_RESOURCE, which peapod may not hold.
    """
    value = wanted if daemon_hard is None else min(wanted, daemon_hard)
    return {"type": "RLIMIT_NOFILE", "hard": value, "soft": value}


def stop_signal(name: str) -> signal.Signals:
    """Parse an image StopSignal ("SIGTERM", "TERM", "15"); empty means SIGTERM."""
    text = name.strip().upper()
    if not text:
        return signal.SIGTERM
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        return signal.Signals[text if text.startswith("SIG") else "SIG" + text]
    except (KeyError, ValueError):
        raise InvalidArgument(f"image stop signal {name!r} is not a known signal") from None


def process_for_exec(spec: dict[str, Any], argv: Sequence[str], tty: bool) -> dict[str, Any]:
    """A ``runc exec --process`` document: the container's process with a new argv.

    User, environment, working directory, capabilities, rlimits and no_new_privileges
    stay those of the container so an exec has the container's privileges, no more.
    """
    if not argv or not argv[0]:
        raise InvalidArgument("exec needs a command: the cmd list is empty")
    check_exec(argv, spec["process"].get("env", []), "the exec command")
    process = copy.deepcopy(spec["process"])
    process["args"] = list(argv)
    process["terminal"] = tty
    process.pop("consoleSize", None)
    return process
