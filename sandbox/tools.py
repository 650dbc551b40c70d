"""Locating and running the external tools the sandbox code relies on.

Namespace work the daemon cannot do on a throwaway thread of its own
(``sandbox.ns_thread``: net, IPC and UTS) is done by util-linux tools run as child
processes, never by forking the daemon.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from functools import cache

from base.cancel import CallContext
from base.errors import DeadlineExceeded, Internal

# System directories searched in addition to $PATH: a daemon started with a
# minimal environment must still find /usr/sbin/ip.
_EXTRA_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

# Cap on how long one tool run may take when the caller gave no deadline.
DEFAULT_TIMEOUT = 30.0

# Which package provides each tool, for error messages.
_PACKAGES = {
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "setpriv": "util-linux",
    "ip": "iproute2",
    "sh": "dash",
    "catatonit": "catatonit",
}


@cache
def find_tool(name: str) -> str:
    """The absolute path of ``name``, or Internal naming the missing package."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    path = shutil.which(name, path=search)
    if path is None:
        package = _PACKAGES.get(name, name)
        raise Internal(f"'{name}' was not found in PATH or /usr/sbin; install {package}")
    return path


def run_tool(
    argv: Sequence[str], what: str, ctx: CallContext | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run argv to completion; with ``check``, raise Internal with its stderr if it fails.

    ``what`` describes the step for error messages. The run is bounded by the
    caller's deadline (or DEFAULT_TIMEOUT) and killed if it overruns.
    """
    timeout = ctx.timeout(DEFAULT_TIMEOUT) if ctx is not None else DEFAULT_TIMEOUT
    try:
        proc = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DeadlineExceeded(f"{what}: '{argv[0]}' did not finish within {timeout:.1f}s") from exc
    except OSError as exc:
        raise Internal(f"{what}: cannot run '{argv[0]}': {exc}") from exc
    if check and proc.returncode != 0:
        err = proc.stderr.strip() or f"exit status {proc.returncode}"
        raise Internal(f"{what} failed: {err}")
    return proc
