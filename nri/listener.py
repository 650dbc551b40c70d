"""NRI's socket: bound with its mode, connections accepted on a thread of their own.

A live socket at the path (another runtime's) is left alone: start() says so and
external plugins cannot connect to peapod. A stale one is replaced. On close the
socket file goes if it is still ours, and its directory if peapod made it and it is
empty, so a daemon leaves the node as it found it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("peapod.nri")

BACKLOG = 64


class Listener:
    """Serves ``path``; each accepted connection goes to ``accept`` (on the accept thread)."""

    def __init__(self, path: str, mode: int, accept: Callable[[socket.socket], None]) -> None:
        self.path = Path(path)
        self.mode = mode
        self.accept = accept
        self.problem = ""  # why the socket is not served, if it is not
        self._sock: socket.socket | None = None
        self._inode = 0
        self._made_dir = False
        self._thread: threading.Thread | None = None

    @property
    def serving(self) -> bool:
        return self._sock is not None

    def start(self) -> bool:
        """Bind and listen; False (and ``problem`` says why) if the socket cannot be used."""
        parent = self.path.parent
        if not parent.exists():
            try:
                parent.mkdir(mode=0o700, parents=True)
            except OSError as exc:
                self.problem = f"cannot make {parent}: {exc.strerror or exc}"
                log.warning("NRI socket not served", extra={"socket": str(self.path),
                                                            "error": self.problem})
                return False
            self._made_dir = True
        self.problem = self._in_use()
        if self.problem:
            log.warning("NRI socket not served; external NRI plugins cannot connect to peapod",
                        extra={"socket": str(self.path), "error": self.problem})
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(str(self.path))
            os.chmod(self.path, self.mode)
            sock.listen(BACKLOG)
        except OSError as exc:
            sock.close()
            self.problem = f"cannot listen on {self.path}: {exc.strerror or exc}"
            log.warning("NRI socket not served", extra={"socket": str(self.path),
                                                        "error": self.problem})
            self._remove_dir()
            return False
        self._inode = os.stat(self.path).st_ino
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="nri-accept",
                                        daemon=True)
        self._thread.start()
        log.info("NRI socket serving", extra={"socket": str(self.path)})
        return True

    def _in_use(self) -> str:
        """Why the path cannot be ours ("" if it can); a stale socket file is removed."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return ""
        if not stat.S_ISSOCK(st.st_mode):
            return f"{self.path} exists and is not a socket"
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2)
        try:
            probe.connect(str(self.path))
        except (ConnectionRefusedError, FileNotFoundError):
            self.path.unlink(missing_ok=True)
            return ""
        except OSError as exc:
            return f"{self.path} cannot be probed: {exc.strerror or exc}"
        finally:
            probe.close()
        return f"{self.path} is served by another process"

    def _accept_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed
            conn.set_inheritable(False)
            try:
                self.accept(conn)
            except Exception:
                log.exception("taking an NRI plugin connection failed")
                conn.close()

    def close(self) -> None:
        """Stop accepting; remove the socket file (if still ours) and a directory we made."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        self._remove_dir()

    def _remove_dir(self) -> None:
        if self._made_dir:
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()  # only if empty
            self._made_dir = False
