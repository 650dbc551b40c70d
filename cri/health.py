"""The daemon's own health check: does its CRI socket answer Version?

Used before READY=1 is sent to systemd and before each watchdog ping. The call goes
through the same socket, server, worker pool and interceptor as the kubelet's, so it
shows in ``peapod_operations_total{operation="Version"}`` like any other call.
"""

from __future__ import annotations

import threading
import time

import grpc

from api import api_pb2, api_pb2_grpc


class SelfCheck:
    """Version calls over the unix socket ``path``, one channel kept open."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._channel: grpc.Channel | None = None
        self._lock = threading.Lock()

    def _stub(self) -> api_pb2_grpc.RuntimeServiceStub:
        with self._lock:
            if self._channel is None:
                self._channel = grpc.insecure_channel(f"unix:{self.path}")
            return api_pb2_grpc.RuntimeServiceStub(self._channel)

    def __call__(self, timeout: float) -> bool:
        """True if Version answers within ``timeout`` seconds."""
        try:
            self._stub().Version(api_pb2.VersionRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
        return True

    def wait(self, timeout: float) -> bool:
        """Retry until Version answers or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self(min(left, 2.0)):
                return True
            time.sleep(min(0.05, max(left, 0)))

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None
