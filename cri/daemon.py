"""The peapod daemon: holds the root, serves CRI on a unix socket, shuts down cleanly."""

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
from cri import routes, servicers
from cri.config import Config
from cri.interceptor import CallInterceptor
from cri.services import Services
from oci.container.recover import recover_containers
from sandbox.recover import recover_pods

log = logging.getLogger("peapod.daemon")


class Daemon:
    """One running peapod: the root lock, the services, the gRPC server and its signals."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._root_lock_fd = _lock_root(config.root_path)
        try:
            self.services = Services(config)
        except BaseException:
            os.close(self._root_lock_fd)
            raise
        self._server: grpc.Server | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------ serving
    def start(self) -> None:
        """Bind the socket and the metrics endpoint and start serving."""
        cfg = self.config
        svc = self.services
        recover_pods(svc.pods)
        recover_containers(svc.containers)
        # Before the CRI socket exists, so a bad metrics address leaves no socket behind.
        self.metrics_address = svc.metrics.serve(cfg.metrics.address)
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
        os.chmod(sock, 0o660)
        self._server = server
        svc.liveness.start()
        log.info(
            "peapod serving",
            extra={"socket": str(sock), "root": cfg.root, "runroot": cfg.runroot,
                   "version": svc.version},
        )

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.start()
        self._stop.wait()
        self.shutdown()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        self._stop.set()

    def request_stop(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        """Stop accepting calls, let in-flight ones finish, release everything."""
        if self._server is not None:
            self._server.stop(self.config.shutdown_grace).wait()
            self._server = None
        self.services.close()
        Path(self.config.listen).unlink(missing_ok=True)
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
