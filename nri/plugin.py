"""One NRI plugin as peapod sees it: its connection, registration, subscription and calls.

A plugin connects (or is started with a connected socket), calls RegisterPlugin with
its index and name, and is then configured: the Configure answer says which events
it wants. Every later call has a timeout; a plugin that does not answer in time,
breaks the protocol or hangs up is closed (``PluginGone``), one that answers with an
error has refused (``PluginRefused``). Closing is idempotent, reported once to the
host with its reason, and stops a plugin peapod started.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import subprocess
import threading
from typing import Protocol, TypeVar

from google.protobuf.message import DecodeError, Message

from api import nri_pb2
from nri import events
from nri.connection import Connection
from nri.mux import PLUGIN_CONN, RUNTIME_CONN
from nri.settings import NRISettings
from nri.ttrpc import (
    INVALID_ARGUMENT,
    UNIMPLEMENTED,
    CallFailed,
    CallTimedOut,
    ConnectionClosed,
    ProtocolError,
)

log = logging.getLogger("peapod.nri")

PACKAGE = nri_pb2.DESCRIPTOR.package
RUNTIME_SERVICE = f"{PACKAGE}.Runtime"
PLUGIN_SERVICE = f"{PACKAGE}.Plugin"
NRI_VERSION = "v0.12.2"  # the containerd/nri release whose protocol peapod speaks
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.+")
STOP_GRACE = 2.0  # seconds a started plugin has to exit after SIGTERM

R = TypeVar("R", bound=Message)


class PluginGone(Exception):
    """The plugin is closed: it hung up, broke the protocol or did not answer in time."""


class PluginTimedOut(PluginGone):
    """The plugin did not answer in time (and is closed now)."""


class PluginRefused(Exception):
    """The plugin answered a call with an error."""


class PluginHost(Protocol):
    """What a plugin's own calls and its end need from the NRI runtime."""

    def update_containers(
        self, plugin: Plugin, req: nri_pb2.UpdateContainersRequest
    ) -> nri_pb2.UpdateContainersResponse: ...

    def plugin_closed(self, plugin: Plugin, reason: str) -> None: ...


def check_index(idx: str) -> str:
    """'' if ``idx`` is a valid plugin index (two digits), else why not."""
    if len(idx) != 2 or not idx.isascii() or not idx.isdigit():
        return f"index {idx!r} is not two digits"
    return ""


def check_name(name: str) -> str:
    """'' if ``name`` is a valid plugin name, else why not."""
    if not name:
        return "the name is empty"
    bad = sorted(set(name) - NAME_CHARS)
    if bad:
        return f"name {name!r} has characters outside [a-zA-Z0-9_.+-]: {''.join(bad)!r}"
    return ""


def peer_pid(sock: socket.socket) -> int:
    """The pid of the process at the other end of a unix socket, 0 if unknown."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return 0
    return int(struct.unpack("3i", creds)[0])


class Plugin:
    """One connected plugin; ``process`` is set for a plugin peapod started."""

    def __init__(
        self,
        sock: socket.socket,
        host: PluginHost,
        *,
        idx: str = "",
        base: str = "",
        config: str = "",
        process: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.host = host
        self.idx = idx
        self.base = base
        self.config = config
        self.process = process
        self.pid = process.pid if process is not None else peer_pid(sock)
        self.events = 0
        self.ready = threading.Event()  # configured and synchronized: gets events now
        self.settled = threading.Event()  # ready, or closed for good
        self.closed_reason = ""
        self._registered = threading.Event()
        self._register_error = ""
        self._close_lock = threading.Lock()
        handlers = {
            (RUNTIME_SERVICE, "RegisterPlugin"): self._register,
            (RUNTIME_SERVICE, "UpdateContainers"): self._update_containers,
        }
        self.conn = Connection(sock, PLUGIN_CONN, RUNTIME_CONN, handlers, self._connection_closed,
                               thread_name=f"nri-plugin-{self.pid}")

    # ---- identity -------------------------------------------------------
    @property
    def name(self) -> str:
        """``<index>-<name>``, or what is known before it registered."""
        if self.base:
            return f"{self.idx}-{self.base}"
        return f"unregistered plugin (pid {self.pid})"

    @property
    def kind(self) -> str:
        return "started" if self.process is not None else "external"

    @property
    def closed(self) -> bool:
        return bool(self.closed_reason)

    @property
    def hung_up(self) -> bool:
        """Whether the plugin ended the connection itself."""
        return self.closed_reason.startswith("connection closed by the plugin")

    def subscribed(self, event: int) -> bool:
        return bool(self.events & events.bit(event))

    def mark_ready(self) -> None:
        """Synchronized: from now on the plugin gets its events."""
        self.ready.set()
        self.settled.set()

    # ---- set-up ---------------------------------------------------------
    def handshake(self, settings: NRISettings) -> None:
        """Wait for RegisterPlugin, then Configure it; PluginGone if either fails."""
        self.conn.start()
        wait = settings.registration_timeout
        if not self._registered.wait(wait):
            self.close(f"did not register within {wait:g} s")
            raise PluginGone(self.closed_reason or f"{self.name} did not register")
        if self._register_error:
            self.close(self._register_error)
            raise PluginGone(self._register_error)
        req = nri_pb2.ConfigureRequest(
            config=self.config, runtime_name=settings.runtime_name,
            runtime_version=settings.runtime_version,
            registration_timeout=int(settings.registration_timeout * 1000),
            request_timeout=int(settings.request_timeout * 1000), NRI_version=NRI_VERSION,
        )
        try:
            resp = self.call("Configure", req, nri_pb2.ConfigureResponse, wait)
        except PluginRefused as exc:
            self.close(f"Configure failed: {exc}")
            raise PluginGone(self.closed_reason) from None
        mask = resp.events or events.ALL
        if mask & ~events.ALL:
            self.close(f"subscribed to unknown events (mask {mask:#x})")
            raise PluginGone(self.closed_reason)
        self.events = mask

    # ---- calls ------------------------------------------------------------
    def call(self, method: str, req: Message, resp_type: type[R], timeout: float) -> R:
        """Call ``method``; PluginGone (closed), PluginTimedOut (closed) or PluginRefused."""
        try:
            payload = self.conn.client.call(PLUGIN_SERVICE, method, req.SerializeToString(),
                                            timeout)
        except CallTimedOut:
            self.close(f"did not answer {method} within {timeout:g} s")
            raise PluginTimedOut(self.closed_reason) from None
        except ConnectionClosed:
            raise PluginGone(self.closed_reason or "connection closed") from None
        except CallFailed as exc:
            raise PluginRefused(exc.message or f"error code {exc.code}") from exc
        try:
            return resp_type.FromString(payload)
        except DecodeError as exc:
            self.close(f"malformed {method} answer: {exc}")
            raise PluginGone(self.closed_reason) from None

    def event(self, event: int, req: Message, resp_type: type[R], timeout: float,
              pod: nri_pb2.PodSandbox, container: nri_pb2.Container | None = None) -> R:
        """Call the event's own method, or StateChange where a plugin lacks it."""
        method = events.METHODS[event]
        try:
            return self.call(method, req, resp_type, timeout)
        except PluginRefused as exc:
            cause = exc.__cause__
            if not (event in events.STATE_CHANGE_FALLBACK and isinstance(cause, CallFailed)
                    and cause.code == UNIMPLEMENTED):
                raise
        change = nri_pb2.StateChangeEvent(event=event, pod=pod)  # type: ignore[arg-type]
        if container is not None:
            change.container.CopyFrom(container)
        self.call("StateChange", change, nri_pb2.Empty, timeout)
        return resp_type()

    # ---- the plugin's own calls --------------------------------------------
    def _register(self, payload: bytes) -> bytes:
        req = nri_pb2.RegisterPluginRequest.FromString(payload)
        if self._registered.is_set():
            raise CallFailed(INVALID_ARGUMENT, "the plugin is registered already")
        if self.process is None:
            why = check_name(req.plugin_name) or check_index(req.plugin_idx)
            if why:
                self._register_error = f"registered with an invalid {why}"
                self._registered.set()
                raise CallFailed(INVALID_ARGUMENT, f"invalid plugin {why}")
            self.idx, self.base = req.plugin_idx, req.plugin_name
        log.info("NRI plugin registered", extra={
            "plugin": self.name, "kind": self.kind, "pid": self.pid,
            "nri_version": req.NRI_version or "unknown"})
        self._registered.set()
        return nri_pb2.Empty().SerializeToString()

    def _update_containers(self, payload: bytes) -> bytes:
        if not self.base or self._register_error:
            raise CallFailed(INVALID_ARGUMENT, "UpdateContainers before registration")
        try:
            req = nri_pb2.UpdateContainersRequest.FromString(payload)
        except DecodeError as exc:
            self.close(f"malformed UpdateContainers request: {exc}")
            raise ProtocolError(str(exc)) from None
        return self.host.update_containers(self, req).SerializeToString()

    # ---- the end ------------------------------------------------------------
    def close(self, reason: str) -> None:
        """Disconnect (idempotent); the host hears of it once, with the first reason."""
        self.conn.close(reason)

    def _connection_closed(self, reason: str) -> None:
        with self._close_lock:
            if self.closed_reason:
                return
            self.closed_reason = reason or "closed"
        self._registered.set()  # a handshake waiting for registration stops waiting
        self.settled.set()
        if not self._register_error and not self.base:
            self._register_error = f"connection ended before registration: {self.closed_reason}"
        self._stop_process()
        self.host.plugin_closed(self, self.closed_reason)

    def _stop_process(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
