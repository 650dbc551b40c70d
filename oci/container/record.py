"""The stored state of one container.

A ``ContainerRecord`` is what peapod keeps in the ``containers`` table (as JSON) and
in its in-memory cache. Records are immutable snapshots: a change makes a new record
with ``dataclasses.replace`` and stores it, so readers never see a half-made change.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any

from base.errors import DataLoss

CREATING = "creating"  # being built; never shown to callers
CREATED = "created"
RUNNING = "running"
EXITED = "exited"

# Reasons reported with an exited container, as the kubelet expects them.
COMPLETED = "Completed"
ERROR = "Error"
OOM_KILLED = "OOMKilled"

FORMAT = 1


@dataclass(frozen=True)
class ContainerRecord:
    """Everything peapod knows about one container."""

    id: str
    sandbox_id: str
    name: str  # k8s_<container>_<pod>_<namespace>_<uid>_<attempt>
    metadata_name: str
    attempt: int
    state: str
    created_at: int  # unix nanoseconds
    runtime_handler: str
    image: str  # the image as the request named it
    image_id: str
    image_ref: str  # repo digest reference of the image, else its ID
    bundle: str  # runtime bundle (config.json, pidfiles, conmon's FIFOs) under the runroot
    storage_dir: str  # persistent per-container dir (overlay upper/work, conmon's exit file)
    log_path: str
    stop_signal: str = "SIGTERM"
    image_annotations: dict[str, str] = field(default_factory=dict)
    user_specified_image: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    mounts: list[dict[str, Any]] = field(default_factory=list)  # as requested, for status
    resources: dict[str, Any] = field(default_factory=dict)  # CRI LinuxContainerResources
    user: dict[str, Any] = field(default_factory=dict)  # uid, gid, additional_gids
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    pid: int = 0
    pid_start: int = 0  # clock ticks since boot, guards against pid reuse
    monitor_pid: int = 0
    monitor_start: int = 0
    # The handler's runtime and monitor as configured at create time: every later
    # operation uses these, so a container outlives its handler's removal from the
    # config. Empty in records made before they were kept (the live handler is used).
    runtime_path: str = ""
    runtime_root: str = ""
    monitor_path: str = ""
    monitor_env: dict[str, str] = field(default_factory=dict)

    # ---- paths --------------------------------------------------------
    @property
    def persist_dir(self) -> str:
        """Where conmon writes ``exit`` and ``oom``; survives daemon restarts."""
        return os.path.join(self.storage_dir, "userdata")

    @property
    def rootfs(self) -> str:
        """The overlay mount point the runtime uses as the container's root."""
        return os.path.join(self.bundle, "rootfs")

    @property
    def config_path(self) -> str:
        return os.path.join(self.bundle, "config.json")

    @property
    def visible(self) -> bool:
        """Whether callers may see the container (it is not half-built)."""
        return self.state != CREATING

    # ---- serialisation --------------------------------------------------
    def to_json(self) -> str:
        # The fields hold only JSON values (no nested dataclasses), so a shallow copy
        # serialises as ``dataclasses.asdict`` would, in a tenth of the time.
        data = {name: getattr(self, name) for name in _FIELDS}
        data["format"] = FORMAT
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ContainerRecord:
        """Rebuild from ``to_json`` output; DataLoss if it is unusable."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
                raise ValueError("not a container record of a known format")
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise DataLoss(f"stored container record is unreadable: {exc}") from exc


_FIELDS = tuple(f.name for f in fields(ContainerRecord))


def exit_reason(exit_code: int, oom_killed: bool) -> str:
    """The kubelet's reason for an exit: OOMKilled, Completed (0) or Error."""
    if oom_killed:
        return OOM_KILLED
    return COMPLETED if exit_code == 0 else ERROR
