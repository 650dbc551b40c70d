"""The OCI runtime's command line (runc and compatibles): start, kill, delete, update, state.

Creation goes through conmon (``conmon.launch``); these are the calls peapod makes
directly. Failures raise domain errors carrying the runtime's own message.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from base import child_io
from base.cancel import CallContext
from base.errors import DeadlineExceeded, FailedPrecondition, Internal, NotFound
from conmon.sync_pipe import runtime_error_text
from oci.container.runtimes import RuntimeHandler

DEFAULT_TIMEOUT = 30.0

_NOT_RUNNING = ("container not running", "process already finished", "is not running")
_MISSING = ("container does not exist", "not exist")


def _run(
    h: RuntimeHandler,
    args: list[str],
    what: str,
    ctx: CallContext | None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    timeout = ctx.timeout(DEFAULT_TIMEOUT) if ctx is not None else DEFAULT_TIMEOUT
    argv = [h.runtime_path, f"--root={h.runtime_root}", *args]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(h.monitor_env),
        )
    except OSError as exc:
        raise Internal(f"{what}: cannot run runtime {h.runtime_path}: {exc}") from None
    try:
        out, err = child_io.communicate(proc, stdin, timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise DeadlineExceeded(
            f"{what}: runtime {h.runtime_path} did not finish within {timeout:.1f}s"
        ) from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _message(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = runtime_error_text(proc.stderr.decode(errors="replace"))
    return text or f"exit status {proc.returncode}"


def start(h: RuntimeHandler, ctr_id: str, ctx: CallContext | None = None) -> None:
    """``<runtime> start``: run the created container's process."""
    what = f"starting container {ctr_id}"
    proc = _run(h, ["start", ctr_id], what, ctx)
    if proc.returncode != 0:
        msg = _message(proc)
        if any(m in msg for m in _MISSING):
            raise NotFound(f"{what}: the runtime has no such container: {msg}")
        raise Internal(f"runtime {h.name} failed {what}: {msg}", reason="RUNTIME_START_FAILED")


def kill(
    h: RuntimeHandler,
    ctr_id: str,
    signal: int,
    *,
    all_processes: bool = False,
    ctx: CallContext | None = None,
) -> bool:
    """Send ``signal``; False if the container is no longer running (or gone)."""
    args = ["kill", *(["--all"] if all_processes else []), ctr_id, str(int(signal))]
    what = f"signalling container {ctr_id}"
    proc = _run(h, args, what, ctx)
    if proc.returncode == 0:
        return True
    msg = _message(proc)
    if any(m in msg for m in _NOT_RUNNING + _MISSING):
        return False
    raise Internal(f"runtime {h.name} failed {what}: {msg}", reason="RUNTIME_KILL_FAILED")


def delete(h: RuntimeHandler, ctr_id: str, ctx: CallContext | None = None) -> None:
    """``<runtime> delete --force``: kill what is left and drop the runtime's state; idempotent."""
    what = f"deleting container {ctr_id}"
    proc = _run(h, ["delete", "--force", ctr_id], what, ctx)
    if proc.returncode != 0:
        msg = _message(proc)
        if any(m in msg for m in _MISSING):
            return
        raise Internal(f"runtime {h.name} failed {what}: {msg}", reason="RUNTIME_DELETE_FAILED")


def update(
    h: RuntimeHandler, ctr_id: str, resources: dict[str, Any], ctx: CallContext | None = None
) -> None:
    """``<runtime> update --resources -``: apply OCI ``linux.resources`` to the running cgroup."""
    what = f"updating resources of container {ctr_id}"
    data = json.dumps(resources).encode()
    proc = _run(h, ["update", "--resources", "-", ctr_id], what, ctx, stdin=data)
    if proc.returncode != 0:
        msg = _message(proc)
        if any(m in msg for m in _NOT_RUNNING + _MISSING):
            raise FailedPrecondition(f"{what}: {msg}")
        raise Internal(f"runtime {h.name} failed {what}: {msg}", reason="RUNTIME_UPDATE_FAILED")


def state(h: RuntimeHandler, ctr_id: str, ctx: CallContext | None = None) -> dict[str, Any] | None:
    """``<runtime> state``: the runtime's view of the container, None if it has none."""
    what = f"reading the state of container {ctr_id}"
    proc = _run(h, ["state", ctr_id], what, ctx)
    if proc.returncode != 0:
        msg = _message(proc)
        if any(m in msg for m in _MISSING):
            return None
        raise Internal(f"runtime {h.name} failed {what}: {msg}")
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        raise Internal(f"{what}: the runtime printed no JSON") from None
    return doc if isinstance(doc, dict) else None
