"""Work inside new namespaces (or with its own working directory) on a throwaway thread.

unshare(2) moves only the calling thread into new namespaces, and for network, IPC
and UTS namespaces the kernel allows it in a multi-threaded process (not for user,
PID or mount namespaces, which ``sandbox.userns`` and ``sandbox.infra`` make in
helper processes); the same holds for the thread's filesystem attributes
(CLONE_FS: working directory, root, umask). A thread that did so must never run
other work: it would make sockets in, or write sysctls of, a pod's namespaces, or
resolve paths against another directory. So every call starts a thread of its
own, which unshares, runs the work and exits; nothing reuses it (grpc's and the
pending-work pools never see it). Threads inherit namespaces from the thread that
creates them, and this one creates none. The namespaces outlive the thread only
through what the work pins (bind mounts of ``/proc/thread-self/ns/<kind>``).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from functools import cache
from typing import TypeVar

from base.errors import Internal

CLONE_FS = 0x00000200
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
FLAGS = {"net": CLONE_NEWNET, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS}

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = struct.Struct("16sh22x")  # struct ifreq: the name, then ifr_flags in the union

T = TypeVar("T")


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]
    libc.unshare.restype = ctypes.c_int
    libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    libc.sethostname.restype = ctypes.c_int
    return libc


def in_new_namespaces(kinds: Iterable[str], work: Callable[[], T]) -> T:
    """Run ``work`` on a new thread that first unshares ``kinds`` ("net", "ipc", "uts").

    Returns what ``work`` returns and raises what it raises; Internal if the
    namespaces cannot be made. The thread has exited (or is exiting) on return.
    """
    flags = 0
    for kind in kinds:
        flags |= FLAGS[kind]
    return on_throwaway_thread(flags, work, "the pod's namespaces")


def in_directory(directory: str, work: Callable[[], T]) -> T:
    """Run ``work`` on a new thread whose working directory alone is ``directory``.

    For system calls that resolve relative paths against the working directory
    (an overlay's lowerdir), which the daemon's other threads must keep.
    """

    def inside() -> T:
        os.chdir(directory)
        return work()

    return on_throwaway_thread(CLONE_FS, inside, "a working directory of its own")


def on_throwaway_thread(flags: int, work: Callable[[], T], what: str) -> T:
    """Run ``work`` on a new thread that first calls unshare(``flags``), then exits.

    Returns what ``work`` returns and raises what it raises; Internal naming
    ``what`` if unshare fails.
    """
    outcome: list[tuple[bool, object]] = []

    def run() -> None:
        try:
            if _libc().unshare(flags) != 0:
                err = ctypes.get_errno()
                raise Internal(f"cannot give a thread {what}: unshare: {os.strerror(err)}")
            outcome.append((True, work()))
        except BaseException as exc:  # handed to the caller below
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="throwaway-unshare", daemon=True)
    thread.start()
    thread.join()
    if not outcome:
        raise Internal(f"the thread given {what} ended without a result")
    ok, value = outcome[0]
    if not ok:
        raise value  # type: ignore[misc]
    return value  # type: ignore[return-value]


def set_hostname(name: str) -> None:
    """Set the hostname of the calling thread's UTS namespace."""
    raw = name.encode()
    if _libc().sethostname(raw, len(raw)) != 0:
        err = ctypes.get_errno()
        raise Internal(f"cannot set hostname {name}: {os.strerror(err)}")


def loopback_up() -> None:
    """Bring ``lo`` of the calling thread's network namespace up.

    The kernel then gives it 127.0.0.1/8 (and ::1), as ``ip link set lo up`` would.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            answer = fcntl.ioctl(sock, SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0))
            flags = _IFREQ.unpack(answer)[1]
            fcntl.ioctl(sock, SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | IFF_UP))
    except OSError as exc:
        raise Internal(f"cannot bring lo up in the pod's network namespace: "
                       f"{exc.strerror or exc}") from exc  # fmt: skip
