"""What the NRI part needs of peapod's configuration (``cri.services`` builds it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NRISettings:
    socket_path: str = "/var/run/nri/nri.sock"  # "": external plugins cannot connect
    socket_mode: int = 0o600
    plugin_dirs: tuple[str, ...] = ("/opt/nri/plugins",)
    plugin_config_dir: str = "/etc/nri/conf.d"
    registration_timeout: float = 5.0  # seconds: register, then each of Configure, Synchronize
    request_timeout: float = 2.0  # seconds a plugin has per lifecycle event
    fail_on_timeout: bool = False  # a timed-out plugin fails the call instead of being skipped
    runtime_name: str = "peapod"
    runtime_version: str = ""
