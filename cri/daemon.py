"""The peapod daemon: holds the root, serves CRI on a unix socket, shuts down cleanly.

Signals: SIGTERM and SIGINT stop it; SIGHUP reloads the configuration (``cri.reload``).
Under systemd (``NOTIFY_SOCKET``) it reports READY=1 once its socket answers Version,
RELOADING=1/READY=1 around a reload, STOPPING=1 on shutdown, and pings the watchdog
when asked (``cri.watchdog``). ``<root>/status.json`` follows each of these states
for ``peapod status`` (``cri.status_file``).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

import grpc

from base.errors import FailedPrecondition
from cri import routes, servicers, status_file
from cri.config import Config, ConfigSource
from cri.health import SelfCheck
from cri.interceptor import CallInterceptor
from cri.reload import Reloader
from cri.sd_notify import Notifier
from cri.services import Services
from cri.watchdog import Watchdog
from oci.container.recover import recover_containers
from sandbox.recover import recover_pods

log = logging.getLogger("peapod.daemon")

READY_TIMEOUT = 30.0  # seconds the socket may take to answer its first Version
START_EVENTS_KEPT = 60.0  # seconds events of start-up recovery wait for subscribers


class Daemon:
    """One running peapod: the root lock, the services, the gRPC server and its signals."""

    def __init__(
        self,
        config: Config,
        source: ConfigSource | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.notifier = notifier or Notifier()
        self._root_lock_fd = _lock_root(config.root_path)
        try:
            self.services = Services(config)
        except BaseException:
            os.close(self._root_lock_fd)
            raise
        self.reloader = Reloader(source, self.services) if source is not None else None
        self._status_path = status_file.path_for(config.root_path)
        self._server: grpc.Server | None = None
        self._check: SelfCheck | None = None
        self._watchdog: Watchdog | None = None
        self._wake = threading.Event()
        self._stop_asked = False
        self._reload_asked = False

    # ------------------------------------------------------------ serving
    def start(self) -> None:
        """Bind the socket and the metrics endpoint and start serving."""
        cfg = self.config
        svc = self.services
        recover_pods(svc.pods)
        recover_containers(svc.containers)
        if svc.nri is not None:
            svc.nri.start()  # plugin_dirs' plugins, synchronized with what was recovered
        # Before the CRI socket exists, so a bad metrics address leaves no socket behind.
        self.metrics_address = svc.metrics.serve(cfg.metrics.address)
        self.stream_url = svc.streams.start()
        sock = Path(cfg.listen)
        _claim_socket(sock)
        limit = cfg.grpc_max_message_bytes
        server = grpc.server(
            ThreadPoolExecutor(max_workers=cfg.grpc_workers, thread_name_prefix="rpc"),
            interceptors=[CallInterceptor(svc.metrics)],
            options=[
                ("grpc.max_send_message_length", limit),
                ("grpc.max_receive_message_length", limit),
                ("grpc.so_reuseport", 0),
            ],
        )
        servicers.register(server, routes.RUNTIME_HANDLERS, routes.IMAGE_HANDLERS, svc)
        if not server.add_insecure_port(f"unix:{sock}"):
            raise FailedPrecondition(f"cannot listen on {sock}")
        server.start()
        svc.events.serving(START_EVENTS_KEPT)
        os.chmod(sock, 0o660)
        self._server = server
        svc.liveness.start()
        svc.stats_collector.start()
        log.info(
            "peapod serving",
            extra={"socket": str(sock), "root": cfg.root, "runroot": cfg.runroot,
                   "version": svc.version},
        )

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT, reloading on SIGHUP, then shut down gracefully."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.publish(status_file.STARTING, features=False)
        try:
            self.start()
            self._announce()
        except BaseException as exc:
            error = getattr(exc, "message", "") or str(exc) or type(exc).__name__
            if self._server is not None:
                self.shutdown(error)
            else:
                self.publish(status_file.STOPPED, features=False, error=error)
            raise
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop_asked:
                break
            if self._reload_asked:
                self._reload_asked = False
                self.reload()
        self.notifier.stopping("stopping: letting in-flight calls finish")
        self.publish(status_file.STOPPING)
        self.shutdown()

    def _announce(self) -> None:
        """Tell systemd (once Version answers) and ``peapod status`` that we serve."""
        if self.notifier.enabled:
            self._check = SelfCheck(self.config.listen)
            if not self._check.wait(READY_TIMEOUT):
                raise FailedPrecondition(
                    f"the CRI socket {self.config.listen} does not answer Version"
                )
            self.notifier.ready(f"serving CRI on {self.config.listen}")
            self._watchdog = Watchdog(self.notifier, self._check)
            self._watchdog.start()
        self.publish(status_file.SERVING)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            log.info("reload requested", extra={"signal": "SIGHUP"})
            self._reload_asked = True
        else:
            log.info("shutting down", extra={"signal": signal.Signals(signum).name})
            self._stop_asked = True
        self._wake.set()

    def request_stop(self) -> None:
        self._stop_asked = True
        self._wake.set()

    def reload(self) -> None:
        """Re-read the configuration and apply what can change (``cri.reload``)."""
        if self.reloader is None:
            log.warning("no configuration source to reload from")
            return
        self.notifier.reloading()
        self.reloader.reload()
        self.config = self.services.config
        self.notifier.ready(f"serving CRI on {self.config.listen}")
        self.publish(status_file.SERVING)

    def publish(self, state: str, *, features: bool = True, error: str = "") -> None:
        """Rewrite ``<runroot>/status.json`` for ``state``."""
        sources = self.source.describe() if self.source is not None else []
        reloads = [e.to_dict() for e in self.reloader.history] if self.reloader else []
        doc = status_file.snapshot(self.services, state, sources, reloads,
                                   features=features, error=error)  # fmt: skip
        status_file.write(self._status_path, doc)

    def shutdown(self, error: str = "") -> None:
        """Stop accepting calls, let in-flight ones finish, release everything."""
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        if self._check is not None:
            self._check.close()
            self._check = None
        self.services.streams.stop()  # every stream ends within about a second
        self.services.events.close()  # GetContainerEvents streams end now (UNAVAILABLE)
        if self._server is not None:
            self._server.stop(self.config.shutdown_grace).wait()
            self._server = None
        self.services.close()
        Path(self.config.listen).unlink(missing_ok=True)
        self.publish(status_file.STOPPED, features=False, error=error)
        os.close(self._root_lock_fd)
        log.info("peapod stopped")


def _lock_root(root: Path) -> int:
    """Hold an exclusive lock on the root so two daemons never share state."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / "peapod.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise FailedPrecondition(
                f"another peapod is running with root {root}; stop it or pass a different --root"
            ) from None
        raise
    return fd


def _claim_socket(path: Path) -> None:
    """Make ``path`` free to bind: refuse a live socket, remove a stale one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() and not path.is_symlink():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.warning("removing stale socket", extra={"socket": str(path)})
        path.unlink(missing_ok=True)
        return
    except OSError as exc:
        raise FailedPrecondition(f"cannot use {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise FailedPrecondition(
        f"another process is serving on {path}; stop it or pass a different --listen"
    )
