"""Finding and running CNI plugin binaries, and turning their failures into errors.

Each run is a subprocess in its own process group (so delegated IPAM plugins
die with it), bounded by the caller's deadline and a per-run cap, and polled
so a cancelled call kills the plugin promptly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import Any

from base import child_io
from base.cancel import CallContext
from base.errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    NotFound,
    PeapodError,
    Unavailable,
)

STDERR_LIMIT = 1500  # characters of plugin stderr kept in an error message
STDOUT_LIMIT = 300  # characters of unparsable stdout kept in an error message
_POLL_SECONDS = 0.05
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Well-known CNI error codes (spec section 5, "Error").
_CODE_NAMES = {
    1: "incompatible CNI version",
    2: "unsupported field in network configuration",
    3: "container unknown or does not exist",
    4: "invalid environment variables",
    5: "I/O failure",
    6: "failed to decode content",
    7: "invalid network config",
    11: "try again later",
    50: "plugin not available",
    51: "plugin not available, existing containers may have limited connectivity",
}


class PluginFailure(Exception):
    """What a failed plugin run reported; the ``__cause__`` of the error raised."""

    def __init__(self, plugin: str, command: str, exit_status: int, code: int | None,
                 msg: str, details: str, stderr: str) -> None:
        super().__init__(f"{plugin} {command}: code {code}: {msg}")
        self.plugin = plugin
        self.command = command
        self.exit_status = exit_status
        self.code = code
        self.msg = msg
        self.details = details
        self.stderr = stderr


def plugin_failure(err: BaseException) -> PluginFailure | None:
    """The PluginFailure behind an error raised by this package, if any."""
    cause = err.__cause__
    return cause if isinstance(cause, PluginFailure) else None


def error_class(code: int | None) -> type[PeapodError]:
    """The peapod error class for a CNI error code."""
    if code in (11, 50, 51):
        return Unavailable
    if code in (1, 2, 7):
        return FailedPrecondition
    if code == 3:
        return NotFound
    return Internal


def find_plugin(plugin_type: str, plugin_dirs: Sequence[str], where: str = "") -> str:
    """The first executable named ``plugin_type`` in ``plugin_dirs``.

    Raises FailedPrecondition naming the directories searched.
    """
    for directory in plugin_dirs:
        path = os.path.join(directory, plugin_type)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    context = f" ({where})" if where else ""
    searched = ", ".join(plugin_dirs) or "no directories configured"
    raise FailedPrecondition(
        f"CNI plugin {plugin_type!r}{context} not found in {searched}", reason=plugin_type
    )


def base_env() -> dict[str, str]:
    """The daemon's environment without inherited CNI_* variables, with a PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.setdefault("PATH", _DEFAULT_PATH)
    return env


def _tail(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def _head(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _error_doc(text: str) -> dict[str, Any] | None:
    """A CNI error object found in ``text`` (whole, or one line of it)."""
    candidates = [text, *reversed(text.splitlines())]
    for candidate in candidates:
        candidate = candidate.strip()
        if not candidate.startswith("{"):
            continue
        try:
            doc = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(doc, dict) and ("code" in doc or "msg" in doc):
            return doc
    return None


def failure_error(plugin: str, command: str, what: str, exit_status: int,
                  stdout: str, stderr: str) -> PeapodError:
    """The error for a plugin that exited non-zero, with PluginFailure as its cause."""
    doc = _error_doc(stdout) or _error_doc(stderr)
    stderr_part = f"; plugin stderr: {_tail(stderr, STDERR_LIMIT)}" if stderr.strip() else ""
    if doc is None:
        how = (f"was killed by signal {-exit_status}" if exit_status < 0
               else f"exited with status {exit_status}")
        message = f"{what} {how} without a CNI error result"
        if stdout.strip():
            message += f"; stdout: {_head(stdout, STDOUT_LIMIT)}"
        failure = PluginFailure(plugin, command, exit_status, None, "", "", stderr)
        err: PeapodError = Internal(message + stderr_part, reason=plugin)
    else:
        raw_code = doc.get("code")
        code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
        msg = str(doc.get("msg") or "")
        details = str(doc.get("details") or "")
        known = _CODE_NAMES.get(code or -1)
        label = f"CNI error code {code}" + (f" ({known})" if known else "")
        message = f"{what} failed: {label}: {msg or 'no message'}"
        if details:
            message += f"; details: {details}"
        failure = PluginFailure(plugin, command, exit_status, code, msg, details, stderr)
        err = error_class(code)(message + stderr_part, reason=plugin)
    err.__cause__ = failure
    return err


def _kill_group(io: child_io.ChildIO) -> None:
    proc = io.proc
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    if not io.run(2):
        # A descendant that left the group still holds a pipe; stop waiting for it.
        io.close()
        proc.wait()


def exec_plugin(
    path: str,
    *,
    plugin: str,
    command: str,
    env: Mapping[str, str],
    stdin: bytes,
    ctx: CallContext,
    cap: float | None,
    what: str,
) -> str:
    """Run one plugin and return its stdout; raise a peapod error if it fails.

    ``cap`` bounds this run on top of the caller's deadline; a plugin that
    outlives either, or whose caller cancels, is killed with its process group.
    """
    timeout = ctx.timeout(cap)
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    try:
        proc = subprocess.Popen(
            [path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(env), cwd="/", close_fds=True, start_new_session=True,
        )
    except OSError as err:
        raise Internal(f"{what}: cannot execute {path}: {err.strerror or err}",
                       reason=plugin) from err
    io = child_io.ChildIO(proc, stdin)  # its exit seen on a pidfd: no polling wait
    try:
        while True:
            wait = _POLL_SECONDS
            if deadline is not None:
                wait = min(wait, max(deadline - time.monotonic(), 0.0))
            if io.run(wait):
                break
            if ctx.cancelled:
                _kill_group(io)
                raise Cancelled(f"{what} was cancelled by the caller; the plugin was killed",
                                reason=plugin)
            if deadline is not None and time.monotonic() >= deadline:
                _kill_group(io)
                left = ctx.remaining()
                why = ("the caller's deadline passed" if left is not None and left <= 0
                       else f"it ran longer than {timeout:.1f}s")
                raise DeadlineExceeded(f"{what} was killed because {why}", reason=plugin)
        stdout = io.output(proc.stdout).decode("utf-8", errors="replace")
        stderr = io.output(proc.stderr).decode("utf-8", errors="replace")
    finally:
        io.close()
    if proc.returncode != 0:
        raise failure_error(plugin, command, what, proc.returncode, stdout, stderr)
    return stdout
