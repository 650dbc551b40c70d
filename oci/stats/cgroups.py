"""A container's or pod's cgroup directories, and readers of their raw figures.

Where the files are (``CgroupDirs``):

- **v1**: one directory per controller hierarchy (``cpuacct``, ``cpu``, ``memory``,
  ``pids``...), each ``<hierarchy mount>/<cgroup path>``.
- **v2**: one directory, ``<cgroup2 mount>/<cgroup path>``, holding every controller's
  files.
- **hybrid**: the v1 directories for the controllers, plus the directory of the same
  path in the controller-less cgroup2 tree (``/sys/fs/cgroup/unified``), which has the
  core files only: ``cpu.stat`` (usage, user, system) and the PSI ``*.pressure`` files.

PSI is read from the cgroup2 directory wherever there is one (v2 and hybrid); v1 alone
has none. A container's cgroup path comes from its ``linux.cgroupsPath``
(``runc_cgroup_path``: cgroupfs paths as they are, systemd ``slice:prefix:id`` as
``<slice path>/<prefix>-<id>.scope``); a pod's is its ``PodCgroup.path``.

Every reader returns None when the files are gone (a cgroup removed while it is read,
or a controller the host lacks) and never raises for that, so one vanished container
cannot fail a list of many. Paths are plain strings and files are read with
``os.open``/``os.read``: these readers run for every container on every stats call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from sandbox.cgroup_layout import HYBRID, V1, V2, CgroupLayout, detect_layout
from sandbox.cgroup_paths import expand_slice

# v1 reports "no limit" as the largest page-aligned value (9223372036854771712 with
# 4 KiB pages); like containerd, anything above 2^62 counts as unlimited.
UNLIMITED_ABOVE = 1 << 62
_BUF = 16384


@dataclass(frozen=True)
class CgroupDirs:
    """The directories holding one cgroup's files, per hierarchy.

    ``v1`` maps a v1 controller name to its directory (v1 and hybrid hosts);
    ``unified`` is the cgroup2 directory (every controller on v2; on hybrid only
    ``cpu.stat`` and the ``*.pressure`` files), None on a pure v1 host.
    """

    path: str
    version: str
    v1: Mapping[str, str] = field(default_factory=dict)
    unified: str | None = None

    def controller(self, name: str) -> str | None:
        """The directory with controller ``name``'s files, or None if none is mounted."""
        if self.version == V2:
            return self.unified
        return self.v1.get(name)


@dataclass(frozen=True)
class PsiData:
    """One PSI line: cumulative stall time (ns) and the 10/60/300 s averages (%)."""

    total_ns: int
    avg10: float
    avg60: float
    avg300: float


@dataclass(frozen=True)
class Pressure:
    """A ``*.pressure`` file: ``some`` tasks stalled, and ``full`` (all; None for cpu on
    kernels that do not report it)."""

    some: PsiData
    full: PsiData | None


@dataclass(frozen=True)
class CpuStat:
    """CPU time used (ns, all cores, cumulative) and CFS throttling; None = not available."""

    usage_ns: int
    user_ns: int | None = None
    system_ns: int | None = None
    periods: int | None = None
    throttled_periods: int | None = None
    throttled_ns: int | None = None


@dataclass(frozen=True)
class MemoryStat:
    """Memory figures in bytes (faults are counts).

    ``working_set`` is usage minus inactive file pages (never below 0), the cAdvisor
    rule both runtimes use. ``limit`` is None when unlimited. ``stat`` is the whole
    ``memory.stat`` (on v1 the hierarchical ``total_*`` keys are there too).
    """

    usage: int
    working_set: int
    rss: int
    cache: int
    mapped_file: int
    page_faults: int
    major_page_faults: int
    limit: int | None
    stat: Mapping[str, int] = field(default_factory=dict)

    @property
    def available(self) -> int:
        """Limit minus working set (0 when unlimited or over the limit), as containerd."""
        if self.limit is None:
            return 0
        return max(self.limit - self.working_set, 0)


@dataclass(frozen=True)
class SwapStat:
    """Swap alone, in bytes: used, and the cgroup's swap allowance (None = unlimited).

    On v1, where the kernel counts memory plus swap (``memory.memsw.*``), both are the
    combined figure less the memory one.
    """

    usage: int
    limit: int | None

    @property
    def available(self) -> int:
        """Allowance minus use (0 when unlimited), as for memory."""
        if self.limit is None:
            return 0
        return max(self.limit - self.usage, 0)


@dataclass(frozen=True)
class PidsStat:
    """Tasks (threads included) in the cgroup, and its limit (None = unlimited)."""

    current: int
    limit: int | None


# ---- where ---------------------------------------------------------------
def runc_cgroup_path(cgroups_path: str) -> str:
    """The absolute cgroup path runc makes for a ``linux.cgroupsPath`` value.

    ``/a/b/id`` (cgroupfs) is itself; ``parent.slice:prefix:id`` (systemd) is the
    slice's path plus ``<prefix>-<id>.scope``.
    """
    if ":" in cgroups_path:
        slice_name, prefix, name = cgroups_path.split(":", 2)
        unit = f"{prefix}-{name}.scope" if prefix else name
        parent = expand_slice(slice_name or "system.slice")
        return f"{parent.rstrip('/')}/{unit}"
    return "/" + cgroups_path.strip("/")


def dirs_for(path: str, layout: CgroupLayout | None = None) -> CgroupDirs:
    """The directories of the cgroup at absolute ``path`` on this host (or ``layout``)."""
    layout = layout if layout is not None else detect_layout()
    rel = path.strip("/")
    unified = None
    if layout.unified is not None:
        unified = os.path.join(str(layout.unified), rel) if rel else str(layout.unified)
    if layout.version == V2:
        return CgroupDirs(path=path, version=V2, unified=unified)
    v1 = {ctl: os.path.join(str(root), rel) for ctl, root in layout.v1.items()}
    return CgroupDirs(path=path, version=HYBRID if unified else V1, v1=v1, unified=unified)


# ---- raw files -----------------------------------------------------------
def read_text(path: str) -> str | None:
    """The file's content, or None if it cannot be read (gone, or never there)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, _BUF)
            if not chunk:
                break
            chunks.append(chunk)
            if len(chunk) < _BUF:
                break
        return b"".join(chunks).decode("ascii", "replace")
    except OSError:  # ENODEV: the cgroup was removed after the open
        return None
    finally:
        os.close(fd)


def read_int(path: str) -> int | None:
    """A file holding one integer, or None (gone, or not a number, like ``max``)."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text.split(maxsplit=1)[0])
    except (ValueError, IndexError):
        return None


def read_limit(path: str) -> int | None:
    """A limit file: the bytes or count, or None when unlimited (``max``, or v1's
    huge value above 2^62) or unreadable. Use ``read_text`` to tell those apart."""
    value = read_int(path)
    if value is None or value > UNLIMITED_ABOVE:
        return None
    return value


def read_keyed(path: str) -> dict[str, int] | None:
    """A flat keyed file (``memory.stat``, ``cpu.stat``: ``key value`` lines) as a dict;
    lines that are not two fields with an integer value are skipped."""
    text = read_text(path)
    if text is None:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def parse_pressure(text: str) -> Pressure | None:
    """A ``*.pressure`` file's content; None without a ``some`` line.

    Lines look like ``some avg10=0.12 avg60=0.00 avg300=0.00 total=1234`` (total in
    microseconds, returned in nanoseconds).
    """
    lines: dict[str, PsiData] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        fields = dict(part.partition("=")[::2] for part in rest.split())
        try:
            lines[kind] = PsiData(
                total_ns=int(fields["total"]) * 1000,
                avg10=float(fields["avg10"]),
                avg60=float(fields["avg60"]),
                avg300=float(fields["avg300"]),
            )
        except (KeyError, ValueError):
            continue
    some = lines.get("some")
    if some is None:
        return None
    return Pressure(some=some, full=lines.get("full"))


# ---- figures -------------------------------------------------------------
def read_pressure(dirs: CgroupDirs, resource: str) -> Pressure | None:
    """PSI of ``resource`` (``cpu``, ``memory`` or ``io``) from the cgroup2 directory;
    None on pure v1, without PSI (kernel built or booted without it), or if gone."""
    if dirs.unified is None:
        return None
    text = read_text(f"{dirs.unified}/{resource}.pressure")
    return parse_pressure(text) if text is not None else None


def read_cpu(dirs: CgroupDirs) -> CpuStat | None:
    """CPU usage: v1 ``cpuacct.usage`` (+ ``usage_user``/``usage_sys``) and the ``cpu``
    controller's ``cpu.stat`` throttling; v2 ``cpu.stat``. None if unreadable."""
    if dirs.version == V2:
        return _cpu_v2(dirs.unified)
    acct = dirs.v1.get("cpuacct")
    usage = read_int(f"{acct}/cpuacct.usage") if acct else None
    if usage is None:
        return None
    cpu_dir = dirs.v1.get("cpu")
    throttle = read_keyed(f"{cpu_dir}/cpu.stat") if cpu_dir else None
    throttle = throttle or {}
    return CpuStat(
        usage_ns=usage,
        user_ns=read_int(f"{acct}/cpuacct.usage_user"),
        system_ns=read_int(f"{acct}/cpuacct.usage_sys"),
        periods=throttle.get("nr_periods"),
        throttled_periods=throttle.get("nr_throttled"),
        throttled_ns=throttle.get("throttled_time"),
    )


def _cpu_v2(d: str | None) -> CpuStat | None:
    stat = read_keyed(f"{d}/cpu.stat") if d else None
    if not stat or "usage_usec" not in stat:
        return None
    throttled = stat.get("throttled_usec")
    user, system = stat.get("user_usec"), stat.get("system_usec")
    return CpuStat(
        usage_ns=stat["usage_usec"] * 1000,
        user_ns=user * 1000 if user is not None else None,
        system_ns=system * 1000 if system is not None else None,
        periods=stat.get("nr_periods"),
        throttled_periods=stat.get("nr_throttled"),
        throttled_ns=throttled * 1000 if throttled is not None else None,
    )


def read_memory(dirs: CgroupDirs) -> MemoryStat | None:
    """Memory usage and its breakdown: v1 ``memory.usage_in_bytes`` + ``memory.stat``
    (``total_*``), v2 ``memory.current`` + ``memory.stat``. None if unreadable."""
    d = dirs.controller("memory")
    if d is None:
        return None
    if dirs.version == V2:
        usage = read_int(f"{d}/memory.current")
        stat = read_keyed(f"{d}/memory.stat")
        if usage is None or stat is None:
            return None
        return _memory(usage, stat, read_limit(f"{d}/memory.max"),
                       inactive="inactive_file", rss="anon", cache="file",
                       mapped="file_mapped", faults="pgfault", major="pgmajfault")  # fmt: skip
    usage = read_int(f"{d}/memory.usage_in_bytes")
    stat = read_keyed(f"{d}/memory.stat")
    if usage is None or stat is None:
        return None
    return _memory(usage, stat, read_limit(f"{d}/memory.limit_in_bytes"),
                   inactive="total_inactive_file", rss="total_rss", cache="total_cache",
                   mapped="total_mapped_file", faults="total_pgfault",
                   major="total_pgmajfault")  # fmt: skip


def _memory(
    usage: int, stat: dict[str, int], limit: int | None, *,
    inactive: str, rss: str, cache: str, mapped: str, faults: str, major: str,
) -> MemoryStat:  # fmt: skip
    return MemoryStat(
        usage=usage,
        working_set=max(usage - stat.get(inactive, 0), 0),
        rss=stat.get(rss, 0),
        cache=stat.get(cache, 0),
        mapped_file=stat.get(mapped, 0),
        page_faults=stat.get(faults, 0),
        major_page_faults=stat.get(major, 0),
        limit=limit,
        stat=stat,
    )


def read_swap(dirs: CgroupDirs) -> SwapStat | None:
    """Swap used by the cgroup alone: v2 ``memory.swap.current``/``.max``; v1
    ``memory.memsw.*`` less ``memory.*``. None without swap accounting or if gone."""
    d = dirs.controller("memory")
    if d is None:
        return None
    if dirs.version == V2:
        usage = read_int(f"{d}/memory.swap.current")
        if usage is None:
            return None
        return SwapStat(usage=usage, limit=read_limit(f"{d}/memory.swap.max"))
    both = read_int(f"{d}/memory.memsw.usage_in_bytes")
    mem = read_int(f"{d}/memory.usage_in_bytes")
    if both is None or mem is None:
        return None
    both_limit = read_limit(f"{d}/memory.memsw.limit_in_bytes")
    mem_limit = read_limit(f"{d}/memory.limit_in_bytes")
    limit = None
    if both_limit is not None and mem_limit is not None:
        limit = max(both_limit - mem_limit, 0)
    return SwapStat(usage=max(both - mem, 0), limit=limit)


def read_pids(dirs: CgroupDirs) -> PidsStat | None:
    """``pids.current`` and ``pids.max``; None without the pids controller or if gone."""
    d = dirs.controller("pids")
    if d is None:
        return None
    current = read_int(f"{d}/pids.current")
    if current is None:
        return None
    return PidsStat(current=current, limit=read_limit(f"{d}/pids.max"))


def host_has_swap(meminfo: str = "/proc/meminfo") -> bool:
    """Whether any swap is configured on the host (``SwapTotal`` above 0)."""
    text = read_text(meminfo) or ""
    for line in text.splitlines():
        if line.startswith("SwapTotal:"):
            parts = line.split()
            return len(parts) > 1 and parts[1] != "0"
    return False


def container_dirs(cgroups_path: str, layout: CgroupLayout | None = None) -> CgroupDirs:
    """The directories of the container whose spec has ``linux.cgroupsPath`` =
    ``cgroups_path`` (see ``oci.spec.resources.cgroups_path``)."""
    return dirs_for(runc_cgroup_path(cgroups_path), layout)


def read_cpu_usage(dirs: CgroupDirs) -> int | None:
    """Cumulative CPU time (ns, all cores) alone: v1 ``cpuacct.usage``, v2 ``cpu.stat``
    ``usage_usec``; one file, for callers that need no breakdown. None if unreadable."""
    if dirs.version == V2:
        cpu = _cpu_v2(dirs.unified)
        return cpu.usage_ns if cpu is not None else None
    acct = dirs.v1.get("cpuacct")
    return read_int(f"{acct}/cpuacct.usage") if acct else None
