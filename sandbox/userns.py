"""A pod's user namespace, with its network, IPC and UTS namespaces owned by it, pinned.

A threaded daemon cannot unshare(CLONE_NEWUSER), and this util-linux's ``unshare``
cannot pin a user namespace itself (it binds the file after entering the namespace,
where it may no longer mount on the host), so a helper does the unsharing and the
daemon the rest:

1. ``unshare --user --net --ipc --uts --keep-caps sh -c SCRIPT`` creates all four
   in one unshare(2) call, so the kernel makes the new user namespace the owner of
   the others (sysfs, /proc and mqueue mounts inside need that); ``--keep-caps``
   keeps the namespace's capabilities across exec. The shell says it is ready and
   waits on stdin.
2. The daemon writes ``/proc/<pid>/uid_map`` and ``gid_map`` (host root may map any
   range) and bind-mounts ``/proc/<pid>/ns/<kind>`` onto ``<dir>/<kind>`` for user
   and each other kind, then releases the shell.
3. The shell sets the hostname while still host root (the kernel lets only host
   root write /proc/sys/kernel/hostname), then becomes the namespace's root with
   ``setpriv`` (the kernel lets only that root write IPC sysctls) and runs the same
   setup as a plain pod: sysctls, ``lo`` up.

The bind mounts keep the namespaces alive after the helper exits; ``unpin`` takes
them apart like any other pinned namespace.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from base.cancel import CallContext
from base.errors import DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument
from base.text import shorten
from sandbox import sysctls as sysctl_mod
from sandbox.idmappings import UserNamespaceMappings
from sandbox.mounts import MS_BIND, mount
from sandbox.namespaces import KINDS, check_request, is_nsfs, prepare_pins, unpin
from sandbox.tools import DEFAULT_TIMEOUT, find_tool

USER = "user"
READY = b"peapod-userns-ready\n"

# $1: hostname or ""; the rest: the command that becomes the namespace's root and
# runs the plain setup (setpriv ... sh -c SETUP_SCRIPT ...).
SCRIPT = r"""
echo peapod-userns-ready
read -r _ || exit 1
h=$1
shift
if [ -n "$h" ]; then
  printf '%s' "$h" > /proc/sys/kernel/hostname || { echo "cannot set hostname $h" >&2; exit 90; }
fi
exec "$@"
"""


def pin_in_user_namespace(
    ns_dir: Path,
    kinds: set[str],
    mappings: UserNamespaceMappings,
    hostname: str | None = None,
    sysctls: Mapping[str, str] | None = None,
    ctx: CallContext | None = None,
) -> dict[str, Path]:
    """Create a user namespace with ``mappings`` and ``kinds`` inside it, pinned.

    Returns the pinned files by kind, "user" included. Checks as ``pin_namespaces``
    does before anything is made; on any failure nothing stays pinned or running.
    """
    parsed = check_request(kinds, hostname, sysctls)
    paths = {USER: ns_dir / USER, **{k: ns_dir / k for k in KINDS if k in kinds}}
    setup = sysctl_mod.setup_argv(None, parsed, lo_up="net" in kinds)
    argv = [find_tool("unshare"), "--user", *(f"--{k}" for k in KINDS if k in kinds),
            "--keep-caps", find_tool("sh"), "-c", SCRIPT, "peapod-userns", hostname or "",
            find_tool("setpriv"), "--reuid=0", "--regid=0", "--clear-groups", "--",
            *setup]  # fmt: skip
    timeout = ctx.timeout(DEFAULT_TIMEOUT) if ctx is not None else DEFAULT_TIMEOUT
    deadline = time.monotonic() + (timeout if timeout is not None else DEFAULT_TIMEOUT)
    prepare_pins(ns_dir, paths)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
    except OSError as exc:
        unpin(paths)
        raise Internal(f"cannot run unshare for the pod's user namespace: {exc}") from exc
    try:
        _set_up(proc, paths, mappings, deadline)
        _finish(proc, parsed, deadline)
        for kind, path in paths.items():
            if not is_nsfs(path):
                raise Internal(f"the helper exited cleanly but no {kind} namespace is bound "
                               f"at {path}")  # fmt: skip
    except BaseException:
        _kill(proc)
        unpin(paths)
        raise
    return paths


def _set_up(
    proc: subprocess.Popen[bytes], paths: Mapping[str, Path],
    mappings: UserNamespaceMappings, deadline: float,
) -> None:
    """Wait for the helper's namespaces, map its ids and pin its namespaces."""
    assert proc.stdout is not None and proc.stdin is not None
    line = _read_line(proc, deadline)
    if line != READY:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # the caller kills and reaps it
            raise DeadlineExceeded(
                "creating the pod's user namespace: its unshare helper did not say it was "
                f"ready (it said {shorten(line.decode(errors='replace'))}) and did not exit"
            ) from None
        raise _failure(proc, "creating the pod's user namespace")
    try:
        for name, text in (("uid_map", mappings.uid_map()), ("gid_map", mappings.gid_map())):
            with open(f"/proc/{proc.pid}/{name}", "w", encoding="ascii") as f:
                f.write(text)
    except OSError as exc:
        raise Internal(f"cannot write the pod's user namespace {name}: {exc.strerror}") from exc
    for kind, path in paths.items():
        try:
            mount(f"/proc/{proc.pid}/ns/{kind}", path, None, MS_BIND, None)
        except OSError as exc:
            raise Internal(f"cannot pin the pod's {kind} namespace at {path}: "
                           f"{exc.strerror}") from exc  # fmt: skip
    proc.stdin.write(b"\n")
    proc.stdin.flush()


def _read_line(proc: subprocess.Popen[bytes], deadline: float) -> bytes:
    """The helper's first line, or b"" if it exited first; DeadlineExceeded past ``deadline``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("creating the pod's user namespace: unshare did not answer")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 64)
            if not chunk:
                break
            data += chunk
    return data


def _finish(proc: subprocess.Popen[bytes], parsed: list[sysctl_mod.Sysctl],
            deadline: float) -> None:  # fmt: skip
    """Let the helper run the setup; InvalidArgument naming a sysctl the kernel refused."""
    try:
        _, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired as exc:
        raise DeadlineExceeded("setting up the pod's namespaces did not finish in time") from exc
    if proc.returncode != 0:
        stderr = err.decode(errors="replace")
        why = sysctl_mod.explain_failure(stderr, parsed)
        if why is not None:
            raise InvalidArgument(why)
        raise Internal(f"setting up the pod's namespaces failed: {stderr.strip()}")


def _failure(proc: subprocess.Popen[bytes], what: str) -> Exception:
    stderr = _stderr(proc).strip() or f"exit status {proc.returncode}"
    if "Operation not permitted" in stderr or "Invalid argument" in stderr:
        return FailedPrecondition(
            f"{what}: this host does not allow it ({stderr}); user namespaces need "
            "CONFIG_USER_NS and user.max_user_namespaces > 0"
        )
    return Internal(f"{what} failed: {stderr}")


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    if proc.stderr is None:
        return ""
    with contextlib.suppress(OSError, ValueError):
        text = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        return text
    return ""


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5.0)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError, ValueError):
                pipe.close()
