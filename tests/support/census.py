"""A leak census: what a test's peapod left on the host, as a before/after snapshot.

``Census`` looks at everything a pod or container can leave behind, limited to what
belongs to one test (its directories, cgroup parent, bridge, subnet and CNI network):

- mounts under the test roots (``netns`` are the nsfs pins among them),
- ports (veths) on the test bridge, host-local's IP reservation files,
- cgroup directories below the test cgroup parent in every mounted hierarchy
  (v1 controllers, name=systemd and the unified cgroup2),
- iptables-save lines naming the test subnet or network, and the CNI chains
  (bridge ``CNI-``, portmap ``CNI-DN-``) derived from the pod ids seen,
- processes whose command line names a test root or that sit in a test cgroup
  (conmon, catatonit and unshare, runc, container processes),
- files and directories under peapod's root and runroot (the database files aside),
- database rows: sandboxes, containers, layer holds, images.

``snapshot()`` returns sets of strings per category; ``leaks(before, after)`` the
items only in ``after``. ``Census.for_pod_env`` builds one for a ``support.pods.PodEnv``.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import sqlite3
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.mounts import parse_mountinfo

if TYPE_CHECKING:
    from support.pods import PodEnv

Snapshot = dict[str, frozenset[str]]
CATEGORIES = ("mounts", "netns", "veths", "ip reservations", "cgroups", "iptables",
              "processes", "files", "db rows")
# Files peapod keeps for its whole life, not per pod or container.
_DAEMON_FILES = ("peapod.db", "peapod.db-wal", "peapod.db-shm", "peapod.db-journal",
                 "peapod.sock", "peapod.lock")
_HOST_LOCAL_BOOKKEEPING = ("lock",)


def cni_chain(network: str, container_id: str, prefix: str = "") -> str:
    """The iptables chain the CNI plugins name after (network, container id)."""
    digest = hashlib.sha512((network + container_id).encode()).hexdigest()
    return f"CNI-{prefix}{digest}"[:28]


def _cgroup_roots() -> list[Path]:
    text = Path("/proc/self/mountinfo").read_text()
    kinds = ("cgroup", "cgroup2")
    return sorted({Path(e.mount_point) for e in parse_mountinfo(text) if e.fstype in kinds})


def _under(path: str, roots: Iterable[Path]) -> bool:
    return any(path == str(r) or path.startswith(str(r) + "/") for r in roots)


@dataclass
class Census:
    """The watched places of one test; ``seen_pods`` feeds the CNI chain names."""

    roots: tuple[Path, ...]  # every directory the daemon under test may write to
    state_dirs: tuple[Path, ...]  # peapod's root and runroot (files are listed there)
    cgroup_parent: str
    db: Path | None = None
    bridge: str = ""
    netname: str = ""
    subnet: ipaddress.IPv4Network | None = None
    ipam_dir: Path | None = None  # host-local's dataDir (reservations in <dir>/<netname>/)
    ignore_pids: set[int] = field(default_factory=set)
    seen_pods: set[str] = field(default_factory=set)

    @classmethod
    def for_pod_env(cls, env: PodEnv) -> Census:
        p = env.peapod
        return cls(
            roots=(p.base,), state_dirs=(p.root, p.runroot), cgroup_parent=env.cgroup_parent,
            db=p.root / "peapod.db", bridge=env.bridge, netname=env.netname,
            subnet=env.subnet, ipam_dir=env.data_dir, ignore_pids={os.getpid()},
        )

    # ---- the categories ----------------------------------------------------
    def mounts(self) -> tuple[set[str], set[str]]:
        """(mount points under the roots, the nsfs ones among them)."""
        entries = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
        under = [e for e in entries if _under(e.mount_point, self.roots)]
        return ({f"{e.mount_point} ({e.fstype})" for e in under},
                {e.mount_point for e in under if e.fstype == "nsfs"})

    def veths(self) -> set[str]:
        brif = Path(f"/sys/class/net/{self.bridge}/brif")
        if not self.bridge or not brif.is_dir():
            return set()
        return {p.name for p in brif.iterdir()}

    def ip_reservations(self) -> set[str]:
        if self.ipam_dir is None:
            return set()
        d = self.ipam_dir / self.netname
        if not d.is_dir():
            return set()
        return {p.name for p in d.iterdir() if p.name not in _HOST_LOCAL_BOOKKEEPING
                and not p.name.startswith("last_reserved_ip")}

    def cgroups(self) -> set[str]:
        out: set[str] = set()
        for root in _cgroup_roots():
            top = root / self.cgroup_parent
            if not top.is_dir():
                continue  # the parent itself is the daemon's, kept or not as it likes
            for dirpath, dirnames, _files in os.walk(top):
                out.update(os.path.join(dirpath, d) for d in dirnames)
        return out

    def cgroup_pids(self) -> set[int]:
        pids: set[int] = set()
        for d in self.cgroups():
            with contextlib.suppress(OSError):
                pids.update(int(x) for x in Path(d, "cgroup.procs").read_text().split())
        return pids

    def iptables(self) -> set[str]:
        """Rules and chains of the test network, counters stripped."""
        out = subprocess.run(["iptables-save"], capture_output=True, text=True,
                             check=True, timeout=30).stdout
        chains = {cni_chain(self.netname, pod, prefix)
                  for pod in self.seen_pods for prefix in ("", "DN-", "SN-")}
        marks = [m for m in (self.netname,) if m]
        if self.subnet is not None:
            marks.append(str(self.subnet.network_address).rsplit(".", 1)[0] + ".")
        found: set[str] = set()
        table = ""
        for line in out.splitlines():
            if line.startswith("*"):
                table = line[1:]
                continue
            if line.startswith(":"):
                name = line[1:].split()[0]
                if name in chains:
                    found.add(f"{table} :{name}")
                continue
            words = line.split()
            named = any(m in line for m in marks) or any(w in chains for w in words)
            if line.startswith("-A ") and named:
                found.add(f"{table} {line}")
        return found

    def processes(self) -> set[str]:
        """``pid comm`` of processes naming a root in their argv or in a test cgroup."""
        in_cgroups = self.cgroup_pids()
        roots = [str(r).encode() for r in self.roots]
        found: set[str] = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in self.ignore_pids:
                continue
            pid = int(entry)
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes()
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if pid in in_cgroups or any(r in argv for r in roots):
                line = argv.replace(b"\0", b" ").decode(errors="replace")[:200]
                found.add(f"{pid} {comm} {line}")
        return found

    def files(self, mounts: set[str]) -> set[str]:
        """Paths under the state dirs, not descending into mount points."""
        points = {m.rsplit(" (", 1)[0] for m in mounts}
        out: set[str] = set()
        for top in self.state_dirs:
            if not top.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in points]
                for name in dirnames + filenames:
                    path = os.path.join(dirpath, name)
                    if dirpath == str(top) and name in _DAEMON_FILES:
                        continue
                    out.add(path)
            out.update(p for p in points if _under(p, (top,)))
        return out

    def db_rows(self) -> set[str]:
        if self.db is None or not self.db.exists():
            return set()
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            rows = {f"sandbox {i} {s}" for i, s in conn.execute("SELECT id, state FROM sandboxes")}
            rows |= {f"container {i} {s}"
                     for i, s in conn.execute("SELECT id, state FROM containers")}
            rows |= {f"layer hold {h}" for (h,) in conn.execute(
                "SELECT DISTINCT holder FROM layer_holds")}
            rows |= {f"image {i}" for (i,) in conn.execute("SELECT id FROM images")}
            return rows
        finally:
            conn.close()

    # ---- snapshots ---------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Every category at this moment."""
        mounts, netns = self.mounts()
        rows = self.db_rows()
        self.seen_pods.update(r.split()[1] for r in rows if r.startswith("sandbox "))
        return {
            "mounts": frozenset(mounts),
            "netns": frozenset(netns),
            "veths": frozenset(self.veths()),
            "ip reservations": frozenset(self.ip_reservations()),
            "cgroups": frozenset(self.cgroups()),
            "iptables": frozenset(self.iptables()),
            "processes": frozenset(self.processes()),
            "files": frozenset(self.files(mounts)),
            "db rows": frozenset(rows),
        }


def leaks(before: Snapshot, after: Snapshot) -> dict[str, list[str]]:
    """What ``after`` has that ``before`` had not, per category (empty ones left out)."""
    out = {k: sorted(after[k] - before.get(k, frozenset())) for k in after}
    return {k: v for k, v in out.items() if v}


def describe(found: dict[str, list[str]], limit: int = 15) -> str:
    """A readable listing of ``leaks()`` output."""
    lines = []
    for category, items in found.items():
        lines.append(f"{category} ({len(items)}):")
        lines += [f"  {item}" for item in items[:limit]]
        if len(items) > limit:
            lines.append(f"  ... and {len(items) - limit} more")
    return "\n".join(lines)
