"""Noticing container exits as they happen: inotify on conmon's exit directory.

conmon writes ``<exit dir>/<container id>`` when the container's process ends
(into a temporary name, then renamed). One daemon thread waits on an inotify
descriptor for files appearing there and hands each name to a callback; files
already present when watching starts are handed over too, so nothing written
while the daemon was down is missed.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from functools import cache

log = logging.getLogger("peapod.containers")

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    return libc


def parse_events(buf: bytes) -> list[tuple[int, str]]:
    """(mask, name) of every inotify event in ``buf``."""
    out = []
    offset = 0
    while offset + _EVENT.size <= len(buf):
        _wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
        raw = buf[offset + _EVENT.size : offset + _EVENT.size + length]
        out.append((mask, raw.split(b"\0", 1)[0].decode(errors="replace")))
        offset += _EVENT.size + length
    return out


class ExitWatcher:
    """Calls ``on_exit(name)`` for each file that appears in ``exit_dir``."""

    def __init__(self, exit_dir: str, on_exit: Callable[[str], None]) -> None:
        self.exit_dir = exit_dir
        self._on_exit = on_exit
        self._fd = -1
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin watching, then report the files already there."""
        os.makedirs(self.exit_dir, mode=0o700, exist_ok=True)
        libc = _libc()
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        if libc.inotify_add_watch(fd, os.fsencode(self.exit_dir), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {self.exit_dir}: {os.strerror(err)}")
        self._fd = fd
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="exit-watcher", daemon=True)
        self._thread.start()
        self.rescan()

    def rescan(self) -> None:
        """Report every file now in the directory (catch-up after a restart or overflow)."""
        for name in sorted(os.listdir(self.exit_dir)):
            self._deliver(name)

    def _deliver(self, name: str) -> None:
        # conmon's temporary files (<id>.XXXXXX, renamed to <id> when written) are
        # not exits: handing one over would get it deleted as stale before the rename.
        if not name or "." in name:
            return
        try:
            self._on_exit(name)
        except Exception:
            log.exception("handling a container exit failed", extra={"container": name})

    def _run(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self._fd, self._wake_r], [], [])
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if self._wake_r in ready:
                return
            try:
                buf = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                continue
            for mask, name in parse_events(buf):
                if mask & IN_Q_OVERFLOW:
                    self.rescan()
                else:
                    self._deliver(name)

    def close(self) -> None:
        if self._thread is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=5)
            self._thread = None
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._fd = self._wake_r = self._wake_w = -1
