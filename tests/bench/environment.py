"""What a comparison run shares: the loopback registry and its images, the CNI network,
and the cgroup subtree the pods live in. ``BenchEnvironment.close`` removes all of it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import secrets
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from support.cgroup_tree import (  # noqa: F401 (scenario 8 takes both from here)
    cgroup_hierarchies,
    remove_cgroup_tree,
)
from support.images import (
    BuiltImage,
    TarBuilder,
    big_image,
    build_image,
    busybox_image,
    push,
)
from support.pods import HostState
from support.registry import Registry
from support.subnets import SubnetLease, reserve

CATATONIT = Path("/usr/bin/catatonit")
CNI_CACHE = Path("/var/lib/cni")  # libcni's result cache, where containerd keeps it


@dataclass(frozen=True)
class Images:
    """References of the images the run pushed, as both runtimes pull them."""

    pause: str
    busybox: str
    big: str
    big_bytes: int
    big_layers: int


def pause_image() -> BuiltImage:
    """A pause image: Debian's static catatonit in pause mode (-P), nothing else."""
    layer = TarBuilder().file("pause", CATATONIT.read_bytes(), mode=0o755).layer()
    return build_image([layer], {"Entrypoint": ["/pause", "-P"], "Cmd": None, "Env": None})


def remove_iptables_rules(marker: str) -> list[str]:
    """Delete every rule whose text has ``marker`` (CNI writes the network name in a
    comment), then flush and delete the CNI chains those rules jumped to; what stayed."""
    for table in ("nat", "filter"):
        out = subprocess.run(["iptables-save", "-t", table], capture_output=True,
                             text=True).stdout
        chains: set[str] = set()
        for line in out.splitlines():
            if line.startswith("-A ") and marker in line:
                args = shlex.split(line)
                if "-j" in args:
                    target = args[args.index("-j") + 1]
                    if target.startswith("CNI-"):
                        chains.add(target)
                subprocess.run(["iptables", "-t", table, "-D", *args[1:]], capture_output=True)
        for chain in chains:
            subprocess.run(["iptables", "-t", table, "-F", chain], capture_output=True)
            subprocess.run(["iptables", "-t", table, "-X", chain], capture_output=True)
    out = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return [f"iptables: {line}" for line in out.splitlines() if marker in line]


class BenchEnvironment:
    """Registry with the run's images, one CNI conflist, a subnet, a cgroup subtree."""

    def __init__(self, big_mb: int = 100, big_layers: int = 6) -> None:
        self.run_tag = secrets.token_hex(4)
        self.base = Path(tempfile.mkdtemp(prefix=f"peapod-compare-{self.run_tag}-"))
        self.base.chmod(0o711)  # searchable, as /run is: runc reaches userns pods' rootfs
        self.net_dir = self.base / "net.d"
        self.cgroup_root = f"peapod-compare-{self.run_tag}"
        self.bridge = f"pbench{self.run_tag[:6]}"
        self.big_mb = big_mb
        self.big_layers = big_layers
        self.registry = Registry()
        self.subnet: SubnetLease | None = None
        self.images: Images | None = None
        self.made_cni_cache = not CNI_CACHE.exists()
        self.host_state = HostState()

    def open(self) -> BenchEnvironment:
        self.registry.start()
        host = self.registry.host
        pause = push(host, "bench/pause", "3.9", pause_image())
        box = push(host, "bench/busybox", "latest", busybox_image())
        big = push(host, "bench/big", "latest", big_image(self.big_mb, self.big_layers, seed=7))
        self.images = Images(pause.ref, box.ref, big.ref, big.image.size, len(big.image.layers))
        candidates = (ipaddress.IPv4Network(f"10.{n}.0.0/22") for n in range(180, 250))
        self.subnet = reserve(candidates)
        self.net_dir.mkdir()
        (self.net_dir / "10-bench.conflist").write_text(json.dumps(self.conflist(), indent=2))
        return self

    def conflist(self) -> dict[str, object]:
        """peapod's shipped default network (bridge, host-local, portmap), renamed for the run."""
        assert self.subnet is not None
        return {
            "cniVersion": "1.0.0",
            "name": f"bench-{self.run_tag}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": True,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": str(self.subnet.network)}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.base / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            ],
        }

    def close(self) -> list[str]:
        """Remove everything the run set up; returns what could not be removed."""
        left = remove_cgroup_tree(self.cgroup_root)
        with contextlib.suppress(Exception):
            self.registry.stop()
        if self.subnet is not None:
            self.subnet.release()
        if Path(f"/sys/class/net/{self.bridge}").exists():
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
            if Path(f"/sys/class/net/{self.bridge}").exists():
                left.append(f"bridge {self.bridge}")
        left += remove_iptables_rules(f"bench-{self.run_tag}")
        self.host_state.restore()  # ip_forward (bridge) and portmap's shared chains
        for cached in (CNI_CACHE / "results").glob(f"bench-{self.run_tag}-*"):
            cached.unlink(missing_ok=True)
        if self.made_cni_cache:
            for d in (CNI_CACHE / "results", CNI_CACHE):
                with contextlib.suppress(OSError):
                    d.rmdir()
            if CNI_CACHE.exists():
                left.append(f"{CNI_CACHE}: {sorted(p.name for p in CNI_CACHE.rglob('*'))}")
        shutil.rmtree(self.base, ignore_errors=True)
        return left

