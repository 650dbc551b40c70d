"""What a kubelet changes on the host, recorded before it starts and put back after.

- the kernel tunables the kubelet sets at start (vm.overcommit_memory, vm.panic_on_oom,
  kernel.panic, kernel.panic_on_oops, kernel.keys.root_maxkeys/root_maxbytes);
- the iptables chains it creates (KUBE-FIREWALL, KUBE-KUBELET-CANARY,
  KUBE-IPTABLES-HINT, in IPv4 and IPv6) and the rules jumping to them, when they
  were not there before;
- its cgroup root (made here in every mounted hierarchy: the kubelet insists it
  exists) with everything below: processes still in it are killed;
- ``/var/lib/kubelet`` and ``/var/log/containers`` when they did not exist (empty
  mount points for the kubelet's private bind mounts).

``restore()`` returns what it could not put back.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from support.cgroup_tree import make_cgroup_tree, remove_cgroup_tree
from support.kubelet import FIXED_PATHS

SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
TABLES = ("mangle", "nat", "filter")
TOOLS = ("iptables", "ip6tables")


def kube_chains(tool: str, table: str) -> set[str]:
    out = subprocess.run([f"{tool}-save", "-t", table], capture_output=True, text=True,
                         timeout=30).stdout
    return {line[1:].split()[0] for line in out.splitlines()
            if line.startswith(":KUBE-")}


class KubeletHost:
    """The host as found; ``prepare()`` makes the cgroup root and mount points."""

    def __init__(self, cgroup_root: str) -> None:
        self.cgroup_root = cgroup_root
        self.sysctls = {name: Path("/proc/sys", name).read_text() for name in SYSCTLS}
        self.chains = {(tool, table): kube_chains(tool, table)
                       for tool in TOOLS for table in TABLES}
        self.made_dirs: list[Path] = []

    def prepare(self) -> None:
        for path in map(Path, FIXED_PATHS):
            if not path.exists():
                missing = [path, *(p for p in path.parents if not p.exists())]
                for d in reversed(missing):
                    d.mkdir()
                    self.made_dirs.append(d)
        make_cgroup_tree(self.cgroup_root)

    def restore(self) -> list[str]:
        """Put back everything recorded, each part whatever the others did; what stayed."""
        left: list[str] = []
        for what, step in (("sysctls", self._sysctls), ("iptables", self._chains),
                           ("cgroups", lambda: [f"cgroup {d}" for d in
                                                remove_cgroup_tree(self.cgroup_root)]),
                           ("mount points", self._made_dirs)):
            try:
                left += step()
            except Exception as err:  # the other parts must still be put back
                left.append(f"{what}: {type(err).__name__}: {err}")
        return left

    def _sysctls(self) -> list[str]:
        for name, value in self.sysctls.items():
            path = Path("/proc/sys", name)
            if path.read_text() != value:
                path.write_text(value)
        return []

    def _chains(self) -> list[str]:
        left = []
        for (tool, table), before in self.chains.items():
            left += self._remove_chains(tool, table, kube_chains(tool, table) - before)
        return left

    def _made_dirs(self) -> list[str]:
        left = []
        for d in reversed(self.made_dirs):
            try:
                d.rmdir()
            except OSError as err:
                left.append(f"{d}: {err}")
        self.made_dirs.clear()
        return left

    @staticmethod
    def _remove_chains(tool: str, table: str, chains: set[str]) -> list[str]:
        if not chains:
            return []
        rules = subprocess.run([f"{tool}-save", "-t", table], capture_output=True,
                               text=True, timeout=30).stdout
        for line in rules.splitlines():
            words = shlex.split(line) if line.startswith("-A ") else []
            if "-j" in words and words[words.index("-j") + 1] in chains:
                subprocess.run([tool, "-t", table, "-D", *words[1:]], capture_output=True)
        for chain in chains:
            subprocess.run([tool, "-t", table, "-F", chain], capture_output=True)
        left = []
        for chain in chains:
            if subprocess.run([tool, "-t", table, "-X", chain],
                              capture_output=True).returncode != 0:
                left.append(f"{tool} -t {table} chain {chain}")
        return left
