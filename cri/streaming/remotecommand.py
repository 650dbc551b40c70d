"""Exec sessions: a ``StreamExec`` wired to a client's channels.

Output is read only as fast as the client takes it (each send blocks), so a slow
client stalls the command instead of growing the daemon's memory. The session
ends when the command has exited and its output is sent (the exit status goes
on the error channel), or when the client goes, which kills the command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from base.errors import PeapodError
from cri.streaming import status
from cri.streaming.channels import (
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    Channels,
    ProtocolViolation,
)
from cri.streaming.requests import StreamRequest
from cri.streaming.resize import ResizeReader
from oci.container.exec_stream import StreamExec
from oci.container.manager import ContainerManager

log = logging.getLogger("peapod.streaming")

_READ = 32 * 1024
_OUTPUT_GRACE = 2.0  # seconds output may still flow after the command exited


def run_exec(containers: ContainerManager, req: StreamRequest, ch: Channels) -> None:
    """Serve one exec session until it ends; never raises for the client's doing."""
    try:
        proc = containers.exec_stream(req.target, list(req.cmd), req.tty, req.stdin)
    except PeapodError as exc:
        _fail(ch, exc.message if hasattr(exc, "message") else str(exc))
        return
    try:
        _Session(proc, req, ch).run()
    finally:
        proc.close()


def _fail(ch: Channels, message: str) -> None:
    with contextlib.suppress(OSError):
        ch.send(3, status.for_error(message, ch.json_status))
    ch.close()


class _Session:
    def __init__(self, proc: StreamExec, req: StreamRequest, ch: Channels) -> None:
        self.proc = proc
        self.req = req
        self.ch = ch
        self.resize = ResizeReader(proc.resize)

    def run(self) -> None:
        outputs = [(self.proc.stdout, STDOUT, self.req.stdout)]
        if self.proc.stderr is not None:
            outputs.append((self.proc.stderr, STDERR, self.req.stderr))
        pumps = [threading.Thread(target=self._pump, args=o, name="exec-output", daemon=True)
                 for o in outputs]  # fmt: skip
        for t in pumps:
            t.start()
        waiter = threading.Thread(target=self._finish, args=(pumps,), name="exec-wait",
                                  daemon=True)  # fmt: skip
        waiter.start()
        try:
            self._read_client()
        except ProtocolViolation as exc:
            self.ch.abort(str(exc))
        except OSError:
            pass
        if waiter.is_alive():  # the client went first: the command goes too
            self.proc.kill()
        waiter.join()

    def _read_client(self) -> None:
        while (item := self.ch.recv()) is not None:
            channel, data = item
            if channel == STDIN:
                if not data:
                    self.proc.close_stdin()
                elif self.proc.stdin is not None:
                    try:
                        _write_all(self.proc.stdin, data)
                    except OSError:
                        self.proc.close_stdin()
            elif channel == RESIZE and data:
                self.resize.feed(data)

    def _pump(self, fd: int | None, channel: int, wanted: bool) -> None:
        if fd is None:
            return
        while True:
            try:
                data = os.read(fd, _READ)
            except OSError:  # EIO: the terminal's last writer is gone
                return
            if not data:
                return
            if wanted:
                try:
                    self.ch.send(channel, data)
                except OSError:
                    wanted = False  # the client is gone; drain so the command is not stuck

    def _finish(self, pumps: list[threading.Thread]) -> None:
        code = self.proc.wait()
        for t in pumps:
            t.join(_OUTPUT_GRACE)
        with contextlib.suppress(OSError):
            message = status.for_exit(code, self.ch.json_status)
            if message:
                self.ch.send(3, message)
        self.ch.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
