"""``<root>/status.json``: what the running daemon tells ``peapod status``.

The daemon rewrites it (atomically, by rename) when it starts, serves, reloads and
stops. It holds what only the daemon knows: its pid and start time (so a reader can
tell a crashed daemon from a live one), version, the configuration files it read,
its runtime handlers with their features, the network settings it uses and its last
reloads. Counts of pods and containers are not here: ``peapod status`` reads them
from the state database. It lives under the root, which the daemon holds locked, so
a second daemon refused at start never overwrites it, and it outlives a reboot:
after one, the pid and start time no longer match and the reader says so.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox import procs

if TYPE_CHECKING:
    from cri.services import Services

log = logging.getLogger("peapod.daemon")

NAME = "status.json"
FORMAT = 1
STARTING, SERVING, STOPPING, STOPPED = "starting", "serving", "stopping", "stopped"


def path_for(root: Path) -> Path:
    return root / NAME


def snapshot(
    services: Services,
    state: str,
    sources: list[str],
    reloads: list[dict[str, Any]],
    *,
    features: bool = True,
    error: str = "",
) -> dict[str, Any]:
    """The document for ``state``; ``features`` probes each handler's runtime (cached)."""
    cfg = services.config
    pid = os.getpid()
    handlers = []
    for name in services.runtimes.names():
        h = services.runtimes.get(name)
        found = services.runtimes.features(name) if features else None
        handlers.append({
            "name": name,
            "default": name == services.runtimes.default,
            "runtime_path": h.runtime_path,
            "runtime_root": h.runtime_root,
            "monitor_path": h.monitor_path,
            "features": None if found is None else {
                "recursive_read_only_mounts": found.recursive_read_only_mounts,
                "user_namespaces": found.user_namespaces,
            },
        })  # fmt: skip
    net = cfg.network
    return {
        "format": FORMAT,
        "state": state,
        "error": error,
        "pid": pid,
        "pid_start_time": procs.start_time(pid),
        "version": services.version,
        "started_at": services.started_at,
        "updated_at": time.time(),
        "listen": cfg.listen,
        "root": cfg.root,
        "runroot": cfg.runroot,
        "config_sources": sources,
        "log_level": cfg.log_level,
        "seccomp_profile": cfg.runtime.seccomp_profile,
        "runtime_handlers": handlers,
        "network": {
            "network_dir": net.network_dir,
            "plugin_dirs": list(net.plugin_dirs),
            "default_network": net.default_network,
            "plugin_timeout": net.plugin_timeout,
        },
        "reloads": reloads,
    }


def write(path: Path, doc: dict[str, Any]) -> None:
    """Replace ``path`` with ``doc`` in one rename; a failure is logged, never raised."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
        tmp.chmod(0o644)
        tmp.rename(path)
    except OSError as exc:
        log.warning("cannot write the status file", extra={"path": str(path),
                                                           "error": exc.strerror})  # fmt: skip
        tmp.unlink(missing_ok=True)


def read(path: Path) -> dict[str, Any] | None:
    """The document, or None if there is none (or it is not one of ours)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


def alive(doc: dict[str, Any]) -> bool:
    """Whether the process that wrote ``doc`` still runs (pid and start time match)."""
    pid = doc.get("pid")
    return isinstance(pid, int) and procs.start_time(pid) == doc.get("pid_start_time")
