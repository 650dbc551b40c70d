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

import contextlib
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from sandbox.mounts import MOUNTINFO, parse_mountinfo
from support.kubelet import FIXED_PATHS

SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes")
TABLES = ("mangle", "nat", "filter")
TOOLS = ("iptables", "ip6tables")


def cgroup_hierarchies() -> list[Path]:
    """Every mounted cgroup hierarchy root (v1 controllers, named ones, cgroup2)."""
    return [Path(e.mount_point) for e in parse_mountinfo(MOUNTINFO.read_text())
            if e.fstype in ("cgroup", "cgroup2") and e.root == "/"]


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
        for root in cgroup_hierarchies():
            top = root / self.cgroup_root
            top.mkdir(exist_ok=True)
            for name in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset starts empty
                if (top / name).exists() and not (top / name).read_text().strip():
                    (top / name).write_text((root / name).read_text())

    def restore(self) -> list[str]:
        """Put back everything recorded; what stayed behind."""
        left: list[str] = []
        for name, value in self.sysctls.items():
            path = Path("/proc/sys", name)
            if path.read_text() != value:
                path.write_text(value)
        for (tool, table), before in self.chains.items():
            left += self._remove_chains(tool, table, kube_chains(tool, table) - before)
        left += remove_cgroup_tree(self.cgroup_root)
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


def remove_cgroup_tree(relative: str) -> list[str]:
    """Kill what runs below ``/<relative>`` and remove it bottom-up in every hierarchy."""
    tops = [root / relative for root in cgroup_hierarchies() if (root / relative).is_dir()]
    for top in tops:
        for dirpath, _dirs, _files in os.walk(top):
            with contextlib.suppress(OSError):
                for pid in Path(dirpath, "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
    left: list[str] = []
    for top in tops:
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            for attempt in range(40):  # a killed task leaves its cgroup a moment later
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if attempt == 39:
                        left.append(f"cgroup {dirpath}")
                    time.sleep(0.05)
    return left
