"""CRI-O, built by deploy/build-peers.sh, with Debian's conmon and runc.

Its defaults (``crio config``), changed only where this machine or a run beside other
runtimes needs it; each change is commented in the crio.conf it writes, which the
results keep. Defaults that matter to the comparison and stay: ``drop_infra_ctr``
(pods whose PID namespace is per container, as the kubelet's are, get no infra
container), CRI-O's own hostport handling, the overlay storage driver it detects, its
default seccomp profile.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from peer_builds import BUILD_HINT, peer_binary, pinned_version
from runtimes import (
    CNI_BIN,
    RUNC,
    ProcessRuntime,
    all_pids,
    command_version,
    read_proc_cmdline,
    unmount_under,
)
from support.daemon import registries_conf_text

CONMON = "/usr/bin/conmon"  # Debian's, as peapod uses
CRIO_MODULE = "github.com/cri-o/cri-o"
# containers/image keeps its blob-info cache here when run as root, whatever CRI-O's
# storage root; no option moves it. The teardown removes it if the run made it.
BLOB_INFO_CACHE = Path("/var/lib/containers")


class CrioRuntime(ProcessRuntime):
    """crio on its own socket, storage and state directories."""

    log_name = "crio.log"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.made_blob_info_cache = False

    @property
    def socket(self) -> Path:
        return self.dir / "run" / "crio.sock"

    @property
    def binary(self) -> str:
        return str(peer_binary("crio"))

    def crio_conf(self) -> str:
        d = self.dir
        return f"""# CRI-O's defaults except where commented.
[crio]
# This run's own storage and state, not /var/lib/containers, /run/containers, /var/lib/crio.
root = "{d / "storage"}"
runroot = "{d / "run" / "storage"}"
log_dir = "{d / "pod-logs-default"}"
version_file = "{d / "run" / "version"}"
clean_shutdown_file = "{d / "lib" / "clean.shutdown"}"

[crio.api]
listen = "{self.socket}"

[crio.runtime]
# No systemd on this host.
cgroup_manager = "cgroupfs"
# crun refuses this host's hybrid cgroups; runc, as every runtime of the run.
default_runtime = "runc"
container_exits_dir = "{d / "run" / "exits"}"
container_attach_socket_dir = "{d / "run"}"
namespaces_dir = "{d / "ns"}"
pinns_path = "{peer_binary("pinns")}"
# Not /usr/share/containers/oci/hooks.d, which CRI-O would create.
hooks_dir = ["{d / "hooks.d"}"]

[crio.runtime.runtimes.runc]
runtime_path = "{RUNC}"
runtime_root = "{d / "runc"}"
# Debian's conmon; with cgroupfs, CRI-O wants conmon in the pod's cgroup.
monitor_path = "{CONMON}"
monitor_cgroup = "pod"

[crio.image]
# The run's registry: this machine reaches no other. Unused by these pods, which get
# no infra container.
pause_image = "{self.shared.pause_image}"
# The host has no /etc/containers/policy.json.
signature_policy = "{d / "policy.json"}"
# Not /etc/crio/policies, which CRI-O would create.
signature_policy_dir = "{d / "policies"}"

[crio.network]
network_dir = "{self.shared.net_dir}"
plugin_dirs = ["{CNI_BIN}"]

[crio.nri]
# Not /var/run/nri/nri.sock, which containerd 2 also listens on by default.
nri_listen = "{d / "run" / "nri.sock"}"
"""

    def policy_json(self) -> str:
        return json.dumps({"default": [{"type": "insecureAcceptAnything"}]}, indent=2) + "\n"

    def registries_conf(self) -> str:
        return registries_conf_text([self.shared.registry_host])

    def command(self) -> list[str]:
        return [self.binary, "--config", str(self.dir / "crio.conf"),
                "--config-dir", str(self.dir / "crio.conf.d")]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # containers/image reads this instead of /etc/containers/registries.conf: the
        # loopback registry over plain HTTP.
        env["CONTAINERS_REGISTRIES_CONF"] = str(self.dir / "registries.conf")
        return env

    def start(self) -> None:
        if not os.access(self.binary, os.X_OK) or not os.access(peer_binary("pinns"), os.X_OK):
            raise RuntimeError(f"{self.binary} or pinns not found: {BUILD_HINT}")
        self.made_blob_info_cache = not BLOB_INFO_CACHE.exists()
        (self.dir / "crio.conf.d").mkdir(parents=True)  # empty: no drop-ins from /etc/crio
        (self.dir / "crio.conf").write_text(self.crio_conf())
        (self.dir / "policy.json").write_text(self.policy_json())
        (self.dir / "registries.conf").write_text(self.registries_conf())
        self._launch()

    def stop(self) -> list[str]:
        problems = self.teardown_pods()
        self.stop_daemon()
        self.kill_monitors()
        unmount_under(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.made_blob_info_cache:
            shutil.rmtree(BLOB_INFO_CACHE, ignore_errors=True)
        problems += [f"{self.name}: {p} left" for p in (self.dir, BLOB_INFO_CACHE)
                     if p.exists() and (p == self.dir or self.made_blob_info_cache)]
        return problems

    def monitor_pids(self) -> list[int]:
        """CRI-O's conmons: theirs name this run's directories in their arguments."""
        mark = str(self.dir)
        return [
            p
            for p in all_pids()
            if (argv := read_proc_cmdline(p))
            and os.path.basename(argv[0]) == "conmon"
            and any(mark in a for a in argv)
        ]

    def versions(self) -> dict[str, str]:
        return {
            "crio": command_version([self.binary, "--version"]),
            "module": f"{CRIO_MODULE} {pinned_version(CRIO_MODULE)}",
            "conmon": command_version([CONMON, "--version"]),
            "runc": command_version([RUNC, "--version"]),
        }

    def config(self) -> dict[str, Any]:
        return {
            "crio.conf": self.crio_conf(),
            "policy.json": self.policy_json(),
            "registries.conf": self.registries_conf(),
            "command": self.command(),
            "environment": {"CONTAINERS_REGISTRIES_CONF": str(self.dir / "registries.conf")},
        }
