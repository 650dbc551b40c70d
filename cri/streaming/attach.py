"""Attach sessions: a client's channels relayed to a container's conmon attach socket.

conmon holds the container's stdio; the session only copies bytes. Output is read
from conmon only as fast as the client takes it (conmon drops a reader that lags
too far rather than buffering). Resize goes through conmon's control FIFO. Ending
a session closes its attach connection and never touches the container; the
session ends by itself when conmon closes the socket (the container exited).
"""

from __future__ import annotations

import contextlib
import logging
import threading

from base.errors import PeapodError
from conmon import attach as conmon_attach
from conmon import ctl
from cri.streaming import status
from cri.streaming.channels import RESIZE, STDERR, STDIN, STDOUT, Channels, ProtocolViolation
from cri.streaming.requests import StreamRequest
from cri.streaming.resize import ResizeReader
from oci.container.manager import ContainerManager

log = logging.getLogger("peapod.streaming")

_PUMP_JOIN = 2.0


def run_attach(containers: ContainerManager, req: StreamRequest, ch: Channels) -> None:
    """Serve one attach session until it ends; never raises for the client's doing."""
    try:
        sock_path, ctl_path, _ = containers.attach_paths(req.target)
        stdin_once = containers.status(req.target).stdin_once
        conn = conmon_attach.attach(sock_path)
    except PeapodError as exc:
        with contextlib.suppress(OSError):
            ch.send(3, status.for_error(str(exc), ch.json_status))
        ch.close()
        return
    try:
        _Session(conn, ctl_path, req, ch, stdin_once).run()
    finally:
        conn.close()


class _Session:
    def __init__(
        self, conn: conmon_attach.AttachConnection, ctl_path: str, req: StreamRequest,
        ch: Channels, stdin_once: bool,
    ) -> None:  # fmt: skip
        self.conn = conn
        self.ctl_path = ctl_path
        self.req = req
        self.ch = ch
        self.detaching = False
        # stdin EOF ends the session when conmon leaves the container's stdin open
        self.end_on_eof = req.stdin and not stdin_once and not req.tty
        self.resize = ResizeReader(self._resize)

    def run(self) -> None:
        pump = threading.Thread(target=self._pump, name="attach-output", daemon=True)
        pump.start()
        ended_by_eof = False
        try:
            ended_by_eof = self._read_client()
        except ProtocolViolation as exc:
            self.ch.abort(str(exc))
        except OSError:
            pass
        self.detaching = True
        self.conn.shutdown()  # wakes the pump; the container keeps running
        pump.join(_PUMP_JOIN)
        if ended_by_eof:
            self._done()

    def _read_client(self) -> bool:
        """Relay the client's input; True when its stdin EOF ended the session."""
        while (item := self.ch.recv()) is not None:
            channel, data = item
            if channel == STDIN and self.req.stdin:
                if not data:
                    self.conn.close_stdin()
                    if self.end_on_eof:
                        return True
                else:
                    # conmon gone means the container exited; the output side ends the session
                    with contextlib.suppress(OSError):
                        self.conn.send_stdin(data)
            elif channel == RESIZE and data:
                self.resize.feed(data)
        return False

    def _resize(self, width: int, height: int) -> None:
        try:
            ctl.resize(self.ctl_path, height, width)
        except PeapodError as exc:
            log.debug("attach resize failed", extra={"error": str(exc)})

    def _pump(self) -> None:
        wanted = {STDOUT: self.req.stdout, STDERR: self.req.stderr}
        while True:
            try:
                packet = self.conn.recv()
            except (OSError, PeapodError):
                packet = None
            if packet is None:
                break
            stream, data = packet
            channel = STDOUT if stream == conmon_attach.STDOUT else STDERR
            if stream in (conmon_attach.STDOUT, conmon_attach.STDERR) and wanted[channel]:
                try:
                    self.ch.send(channel, data)
                except OSError:
                    return  # the client is gone; the reading side ends the session
        if not self.detaching:  # conmon closed: the container's output ended
            self._done()

    def _done(self) -> None:
        with contextlib.suppress(OSError):
            message = status.for_exit(0, self.ch.json_status)
            if message:
                self.ch.send(3, message)
        self.ch.close()
