"""containerd 2, built by deploy/build-peers.sh: its CRI plugin, runc v2 shim, overlayfs.

Its defaults (``containerd config default``), changed only where this machine or a run
beside other runtimes needs it; each change is commented in the config it writes, which
the results keep.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from peer_builds import BUILD_HINT, peer_binary, pinned_version
from runtimes import CNI_BIN, RUNC, ContainerdRuntime, has_sys_resource

MODULE = "github.com/containerd/containerd/v2"


class Containerd2Runtime(ContainerdRuntime):
    """containerd v2 from the pinned module, on its own socket and state directories.

    Its shim sockets go to a directory of this run's own (socket_dir, at most 42
    characters), not the default /run/containerd/s: a concurrent run with Debian's
    containerd, which cannot move its shim sockets, removes the new entries it finds
    there when it ends.
    """

    binary = str(peer_binary("containerd"))
    install_hint = BUILD_HINT
    log_name = "containerd.log"

    @property
    def shim_dir(self) -> Path:
        return Path(f"/run/pbench-{self.shared.run_tag}-{self.name}")

    def note_shim_sockets(self) -> None:
        self.shim_dir.mkdir(mode=0o700)

    def remove_shim_sockets(self) -> list[str]:
        shutil.rmtree(self.shim_dir, ignore_errors=True)
        return [f"{self.name}: {self.shim_dir} left"] if self.shim_dir.exists() else []

    def environment(self) -> dict[str, str]:
        # containerd finds its shim on PATH: its own build first, not Debian's 1.6 shim in
        # /usr/bin (as an install to /usr/local/bin would be found first).
        env = dict(os.environ)
        env["PATH"] = f"{peer_binary('')}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
        return env

    def config_toml(self) -> str:
        d = self.dir
        images = "plugins.'io.containerd.cri.v1.images'"
        rt = "plugins.'io.containerd.cri.v1.runtime'"
        return f"""version = 4
# This run's own directories, socket and no drop-ins from /etc/containerd/conf.d.
root = '{d / "root"}'
state = '{d / "state"}'
imports = []

[plugins.'io.containerd.server.v1.grpc']
  address = '{self.socket}'
[plugins.'io.containerd.server.v1.ttrpc']
  address = '{self.socket}.ttrpc'
[plugins.'io.containerd.internal.v1.opt']
  path = '{d / "opt"}'
[plugins.'io.containerd.shim.v1.manager']
  socket_dir = '{self.shim_dir}'
[plugins.'io.containerd.nri.v1.nri']
  # Not /var/run/nri/nri.sock, which CRI-O also listens on by default.
  socket_path = '{d / "nri.sock"}'

[{images}.pinned_images]
  # The run's registry: this machine reaches no other.
  sandbox = '{self.shared.pause_image}'
[{images}.registry]
  # The loopback registry over plain HTTP (hosts.toml).
  config_path = '{d / "certs.d"}'

[{rt}]
  # Pod network namespaces under this run's state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  # The pause container's oom_score_adj (-998) needs CAP_SYS_RESOURCE, which this host
  # lacks: runc then fails. Clamp to containerd's own score.
  restrict_oom_score_adj = {str(not has_sys_resource()).lower()}
[{rt}.containerd.runtimes.runc.options]
  # Debian's runc, which every runtime of the run uses (crun refuses hybrid cgroups).
  BinaryName = '{RUNC}'
  Root = '{d / "runc"}'
[{rt}.cni]
  bin_dirs = ['{CNI_BIN}']
  conf_dir = '{self.shared.net_dir}'
"""

    def versions(self) -> dict[str, str]:
        return {
            **super().versions(),
            "module": f"{MODULE} {pinned_version(MODULE)}",
            "containerd-shim-runc-v2": " ".join(
                _version_lines([str(peer_binary("containerd-shim-runc-v2")), "-v"])
            ),
        }


def _version_lines(argv: list[str]) -> list[str]:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    return [line.strip() for line in (out.stdout or out.stderr).splitlines() if line.strip()]
