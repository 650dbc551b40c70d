"""Runtime handlers (the kubelet's RuntimeClass handlers): which runtime and monitor run a pod.

Each handler names an OCI runtime with a runc-compatible command line, the directory
where it keeps container state, and the conmon binary that monitors its containers.
A pod picks one by name; the empty name means the configured default.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace

from base.errors import InvalidArgument

log = logging.getLogger("peapod.runtime")

# Searched after $PATH, so a daemon started with a minimal environment finds /usr/sbin/runc.
_SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
_FEATURES_TIMEOUT = 10.0


@dataclass(frozen=True)
class RuntimeHandler:
    """One configured handler with its paths resolved."""

    name: str
    runtime_path: str
    runtime_root: str
    monitor_path: str
    monitor_env: Mapping[str, str]
    create_timeout: float


@dataclass(frozen=True)
class HandlerFeatures:
    """What a handler's runtime supports, as advertised in Status."""

    recursive_read_only_mounts: bool = False
    user_namespaces: bool = False


def resolve_binary(name_or_path: str) -> str:
    """An absolute path for a binary: kept if absolute, else looked up in PATH and sbin."""
    if os.path.isabs(name_or_path):
        return name_or_path
    search = os.pathsep.join([os.environ.get("PATH", ""), *_SYSTEM_PATH])
    return shutil.which(name_or_path, path=search) or name_or_path


class RuntimeHandlers:
    """The configured handlers and the default one; ``replace`` swaps them all at once.

    A replacement (SIGHUP) applies to pods and containers created afterwards: an
    existing container keeps the runtime its handler had at create time.
    """

    def __init__(self, handlers: Mapping[str, RuntimeHandler], default: str) -> None:
        self._features: dict[str, HandlerFeatures] = {}
        self._lock = threading.Lock()
        self._table = self._checked(handlers, default)
        self._host_userns = "the host's user namespace support was not probed"

    def set_host_user_namespaces(self, why_not: str) -> None:
        """Record the host's answer (kernel, filesystem): "" if it can run userns pods."""
        self._host_userns = why_not

    def user_namespaces_refusal(self, name: str) -> str:
        """Why handler ``name`` cannot run a pod in its own user namespace; "" if it can."""
        if self._host_userns:
            return self._host_userns
        if not self._runtime_features(name).user_namespaces:
            return (f"the runtime of handler {self.get(name).name!r} does not list the user "
                    "namespace in `features`")  # fmt: skip
        return ""

    @staticmethod
    def _checked(
        handlers: Mapping[str, RuntimeHandler], default: str
    ) -> tuple[dict[str, RuntimeHandler], str]:
        if default not in handlers:
            raise InvalidArgument(f"default runtime handler {default!r} is not configured")
        return dict(handlers), default

    @property
    def default(self) -> str:
        return self._table[1]

    def replace(self, handlers: Mapping[str, RuntimeHandler], default: str) -> None:
        """Serve ``handlers`` from now on; features are probed again for changed handlers."""
        table = self._checked(handlers, default)
        with self._lock:
            old = self._table[0]
            self._table = table
            for name in list(self._features):
                if old.get(name) != table[0].get(name):
                    del self._features[name]

    def names(self) -> list[str]:
        """Configured handler names, the default first."""
        handlers, default = self._table
        return [default, *sorted(n for n in handlers if n != default)]

    def get(self, name: str) -> RuntimeHandler:
        """The handler called ``name`` ("" for the default); InvalidArgument if unknown."""
        handlers, default = self._table
        handler = handlers.get(name or default)
        if handler is None:
            raise InvalidArgument(
                f"runtime handler {name!r} is not configured; known handlers: "
                f"{', '.join(self.names())}"
            )
        return handler

    def validate(self, name: str) -> str:
        """The resolved name of handler ``name`` ("" means the default)."""
        return self.get(name).name

    def features(self, name: str) -> HandlerFeatures:
        """The handler's features: its runtime's, user namespaces only if the host can too."""
        found = self._runtime_features(name)
        if found.user_namespaces and self._host_userns:
            return replace(found, user_namespaces=False)
        return found

    def _runtime_features(self, name: str) -> HandlerFeatures:
        """The handler's features from ``<runtime> features`` (cached; none if unsupported)."""
        handler = self.get(name)
        with self._lock:
            cached = self._features.get(handler.name)
        if cached is not None:
            return cached
        found = probe_features(handler.runtime_path)
        with self._lock:
            if self._table[0].get(handler.name) == handler:
                self._features[handler.name] = found
        return found


def probe_features(runtime_path: str) -> HandlerFeatures:
    """Ask the runtime which mount options and namespaces it knows; any failure means no
    extra features. Joining a user namespace by path with uid/gid mappings in the spec is
    all peapod asks of a runtime (the rootfs is ID-mapped before it runs), so listing the
    "user" namespace is enough."""
    try:
        proc = subprocess.run(
            [runtime_path, "features"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_FEATURES_TIMEOUT,
            check=False,
        )
        doc = json.loads(proc.stdout) if proc.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, ValueError):
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    options = doc.get("mountOptions")
    linux = doc.get("linux")
    spaces = linux.get("namespaces") if isinstance(linux, dict) else None
    return HandlerFeatures(
        recursive_read_only_mounts=isinstance(options, list) and "rro" in options,
        user_namespaces=isinstance(spaces, list) and "user" in spaces,
    )

