"""Where containers live on disk and the limits every container gets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ContainerSettings:
    """Where containers live on disk and the limits they get."""

    containers_dir: Path  # persistent: overlay upper/work, conmon's exit file
    bundles_dir: Path  # runroot: config.json, pidfiles, conmon's FIFOs, the rootfs mount
    exit_dir: Path
    socket_dir: Path
    exec_dir: Path  # ExecSync's temporary files (keep it on tmpfs)
    monitor_log_level: str = "info"
    log_size_max: int = -1
    exec_output_max: int = 16 << 20
