"""Pod sysctls: which may be set, and writing them inside the pod's namespaces.

Only sysctls that live in a namespace the pod owns can be set per pod:
``net.*`` (network namespace) and ``kernel.shm*``, ``kernel.msg*``,
``kernel.sem``, ``fs.mqueue.*`` (IPC namespace). Names come in the dotted
form (``net.ipv4.ip_forward``) or the slash form (``net/ipv4/ip_forward``);
in the slash form a dot is part of a component (``net/ipv4/conf/eth0.1/...``).
A thread inside the pod's namespaces writes them (``write_here``); where a helper
process makes the namespaces (a pod in its own user namespace), a shell step run
inside does (``setup_argv``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from base.cancel import CallContext
from base.errors import Internal, InvalidArgument
from base.text import control_char, shorten
from sandbox.tools import find_tool, run_tool

PROC_SYS = Path("/proc/sys")

NET = "net"
IPC = "ipc"

_IPC_PREFIXES = ("kernel.shm", "kernel.msg", "fs.mqueue.")
_IPC_EXACT = frozenset({"kernel.sem"})
_COMPONENT = re.compile(r"^[A-Za-z0-9_:@+-][A-Za-z0-9_.:@+-]*$")
# A /proc/sys write takes at most a page; names are paths under /proc/sys.
MAX_VALUE_BYTES = 4096
MAX_NAME_LEN = 255

# Exit status and stderr marker the setup script uses to name a failed sysctl.
FAILED_MARKER = "peapod-sysctl-failed "
EXIT_SYSCTL = 91
EXIT_HOSTNAME = 90

# Runs inside the new (or joined) namespaces. Arguments, never interpolated:
#   $1 hostname or "", $2 path of `ip` or "", then pairs of (path under
#   /proc/sys, value). Ends by exec'ing `ip link set lo up` when asked, so the
#   whole step costs one shell and at most one more exec.
SETUP_SCRIPT = r"""
h=$1 ip=$2
shift 2
if [ -n "$h" ]; then
  printf '%s' "$h" > /proc/sys/kernel/hostname || { echo "cannot set hostname $h" >&2; exit 90; }
fi
while [ $# -ge 2 ]; do
  printf '%s\n' "$2" > "/proc/sys/$1" || { echo "peapod-sysctl-failed $1" >&2; exit 91; }
  shift 2
done
if [ -n "$ip" ]; then exec "$ip" link set lo up; fi
"""


@dataclass(frozen=True)
class Sysctl:
    """One validated sysctl: its dotted name, path under /proc/sys, value and namespace."""

    name: str
    path: str
    value: str
    namespace: str


def _swap(name: str) -> str:
    return name.translate(str.maketrans("./", "/."))


def parse_name(name: str) -> tuple[str, str]:
    """Return (dotted name, path relative to /proc/sys) for either naming form."""
    if not name or name != name.strip() or len(name) > MAX_NAME_LEN:
        raise InvalidArgument(
            f"sysctl name {shorten(name)} is empty, longer than {MAX_NAME_LEN} characters "
            "or has surrounding whitespace"
        )
    first_dot, first_slash = name.find("."), name.find("/")
    slash_form = first_slash != -1 and (first_dot == -1 or first_slash < first_dot)
    path = name if slash_form else _swap(name)
    dotted = _swap(name) if slash_form else name
    for part in path.split("/"):
        if part in ("", ".", "..") or not _COMPONENT.fullmatch(part):
            raise InvalidArgument(f"sysctl name {shorten(name)} is not a valid sysctl name")
    return dotted, path


def namespace_of(dotted: str) -> str | None:
    """The namespace ("net" or "ipc") a sysctl belongs to, or None if not namespaced."""
    if dotted.startswith("net."):
        return NET
    if dotted in _IPC_EXACT or dotted.startswith(_IPC_PREFIXES):
        return IPC
    return None


def validate(
    sysctls: Mapping[str, str],
    host_network: bool,
    host_ipc: bool,
    proc_sys: Path = PROC_SYS,
) -> list[Sysctl]:
    """Check every sysctl may be set for this pod; return them parsed, in order.

    Raises InvalidArgument naming the first offending sysctl and why. Nothing
    is created or written here.
    """
    result: list[Sysctl] = []
    for name, value in sysctls.items():
        dotted, path = parse_name(name)
        ns = namespace_of(dotted)
        if ns is None:
            raise InvalidArgument(
                f"sysctl {name} is not namespaced (only net.*, kernel.shm*, kernel.msg*, "
                "kernel.sem and fs.mqueue.* can be set per pod)"
            )
        if ns == NET and host_network:
            raise InvalidArgument(
                f"sysctl {name} cannot be set: the pod uses the host's network namespace"
            )
        if ns == IPC and host_ipc:
            raise InvalidArgument(
                f"sysctl {name} cannot be set: the pod uses the host's IPC namespace"
            )
        if not (proc_sys / path).is_file():
            raise InvalidArgument(f"sysctl {name} does not exist (no {proc_sys / path})")
        if len(value.encode()) > MAX_VALUE_BYTES:
            raise InvalidArgument(
                f"sysctl {name} has a value of {len(value.encode())} bytes; the kernel takes "
                f"at most {MAX_VALUE_BYTES}"
            )
        bad = control_char(value.replace("\t", ""))  # tabs separate some values' fields
        if bad is not None:
            raise InvalidArgument(
                f"sysctl {name} value {shorten(value)} holds a control character ({bad!r}: a "
                "newline, NUL or the like)"
            )
        result.append(Sysctl(dotted, path, value, ns))
    return result


def setup_argv(hostname: str | None, sysctls: Sequence[Sysctl], lo_up: bool) -> list[str]:
    """The ``sh -c`` argv that sets the hostname, writes sysctls and brings lo up."""
    argv = [find_tool("sh"), "-c", SETUP_SCRIPT, "peapod-setup"]
    argv += [hostname or "", find_tool("ip") if lo_up else ""]
    for s in sysctls:
        argv += [s.path, s.value]
    return argv


def write_here(sysctls: Sequence[Sysctl], proc_sys: Path = PROC_SYS) -> None:
    """Write ``sysctls`` in the calling thread's own namespaces, in order.

    ``/proc/sys/net`` and the IPC entries of ``/proc/sys`` resolve to the network
    and IPC namespaces of the thread that opens them, not of the process, so a
    thread that unshared its namespaces writes its pod's values. InvalidArgument
    names the sysctl the kernel refused and its answer.
    """
    for s in sysctls:
        data = f"{s.value}\n".encode()
        try:
            fd = os.open(proc_sys / s.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                written = os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            raise InvalidArgument(f"sysctl {s.name}={s.value} could not be set in the pod's "
                                  f"namespace: {exc.strerror or exc}") from exc  # fmt: skip
        if written != len(data):
            raise InvalidArgument(f"sysctl {s.name}={s.value} could not be set in the pod's "
                                  f"namespace: the kernel took {written} of {len(data)} bytes")


def explain_failure(stderr: str, sysctls: Sequence[Sysctl]) -> str | None:
    """If the setup script failed on a sysctl, say which one and the kernel's answer."""
    lines = stderr.strip().splitlines()
    for i, line in enumerate(lines):
        if line.startswith(FAILED_MARKER):
            path = line[len(FAILED_MARKER) :]
            names = [s for s in sysctls if s.path == path]
            label = f"{names[0].name}={names[0].value}" if names else path
            why = lines[i - 1].rsplit(":", 1)[-1].strip() if i > 0 else "write failed"
            return f"sysctl {label} could not be set in the pod's namespace: {why}"
    return None


def apply(
    sysctls: Sequence[Sysctl], ns_paths: Mapping[str, Path], ctx: CallContext | None = None
) -> None:
    """Write sysctls inside already-pinned namespaces (via nsenter)."""
    if not sysctls:
        return
    argv = [find_tool("nsenter")]
    for s in sysctls:
        if s.namespace not in ns_paths:
            raise InvalidArgument(f"sysctl {s.name} needs the pod's own {s.namespace} namespace")
    argv += [f"--{kind}={ns_paths[kind]}" for kind in sorted({s.namespace for s in sysctls})]
    argv += ["--", *setup_argv(None, sysctls, lo_up=False)]
    proc = run_tool(argv, "applying pod sysctls", ctx, check=False)
    if proc.returncode != 0:
        why = explain_failure(proc.stderr, sysctls)
        if why is not None:
            raise InvalidArgument(why)
        raise Internal(f"applying pod sysctls failed: {proc.stderr.strip()}")
