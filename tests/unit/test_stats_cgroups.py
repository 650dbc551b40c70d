"""oci.stats.cgroups on fake cgroup trees: where the files are on v1, hybrid and v2, and
what the readers make of them (PSI, vanished files, unlimited limits, swap)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oci.stats.cgroups import (
    UNLIMITED_ABOVE,
    CgroupDirs,
    container_dirs,
    dirs_for,
    host_has_swap,
    parse_pressure,
    read_cpu,
    read_cpu_usage,
    read_keyed,
    read_limit,
    read_memory,
    read_pids,
    read_pressure,
    read_swap,
    runc_cgroup_path,
)
from sandbox.cgroup_layout import HYBRID, V1, V2, CgroupLayout

V1_UNLIMITED = "9223372036854771712"
PSI = (
    "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\n"
    "full avg10=0.10 avg60=0.00 avg300=0.00 total=789\n"
)
V1_MEMORY_STAT = (
    "cache 1\nrss 2\ninactive_file 3\n"
    "total_cache 40960\ntotal_rss 81920\ntotal_mapped_file 4096\ntotal_inactive_file 20480\n"
    "total_pgfault 77\ntotal_pgmajfault 5\n"
)
V2_MEMORY_STAT = (
    "anon 81920\nfile 40960\nfile_mapped 4096\ninactive_file 20480\n"
    "pgfault 77\npgmajfault 5\nkernel 1234\n"
)


def write(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def v1_layout(root: Path, unified: bool = False) -> CgroupLayout:
    ctls = {c: root / c for c in ("cpu", "cpuacct", "memory", "pids")}
    if unified:
        return CgroupLayout(HYBRID, ctls, root / "unified")
    return CgroupLayout(V1, ctls)


def fill_v1(root: Path, path: str, limit: str = V1_UNLIMITED) -> None:
    rel = path.strip("/")
    write(root / "cpuacct" / rel, {"cpuacct.usage": "5000000123\n", "cpuacct.usage_user": "3000\n",
                                   "cpuacct.usage_sys": "2000\n"})  # fmt: skip
    write(root / "cpu" / rel, {"cpu.stat": "nr_periods 10\nnr_throttled 2\nthrottled_time 99\n"})
    write(root / "memory" / rel, {
        "memory.usage_in_bytes": "122880\n", "memory.stat": V1_MEMORY_STAT,
        "memory.limit_in_bytes": limit + "\n",
        "memory.memsw.usage_in_bytes": "126976\n", "memory.memsw.limit_in_bytes": limit + "\n",
    })  # fmt: skip
    write(root / "pids" / rel, {"pids.current": "3\n", "pids.max": "max\n"})


def fill_v2(d: Path, mem_max: str = "max") -> None:
    write(d, {
        "cpu.stat": "usage_usec 5000000\nuser_usec 3000000\nsystem_usec 2000000\n"
                    "nr_periods 10\nnr_throttled 2\nthrottled_usec 7\n",
        "memory.current": "122880\n", "memory.stat": V2_MEMORY_STAT, "memory.max": mem_max,
        "memory.swap.current": "8192\n", "memory.swap.max": "max\n",
        "pids.current": "3\n", "pids.max": "100\n",
        "cpu.pressure": PSI, "memory.pressure": PSI, "io.pressure": PSI,
    })  # fmt: skip


# ---- where -------------------------------------------------------------------------


def test_runc_cgroup_paths_for_both_drivers() -> None:
    assert runc_cgroup_path("/kubepods/pod1/abc") == "/kubepods/pod1/abc"
    assert runc_cgroup_path("kubepods/pod1/abc/") == "/kubepods/pod1/abc"
    assert runc_cgroup_path("kubepods-burstable-pod1.slice:peapod:abc") == (
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/peapod-abc.scope"
    )
    assert runc_cgroup_path(":peapod:abc") == "/system.slice/peapod-abc.scope"


def test_dirs_on_v1_hybrid_and_v2(tmp_path: Path) -> None:
    v1 = dirs_for("/kubepods/pod1", v1_layout(tmp_path))
    assert v1.version == V1 and v1.unified is None
    assert v1.controller("memory") == str(tmp_path / "memory/kubepods/pod1")
    hybrid = dirs_for("/kubepods/pod1", v1_layout(tmp_path, unified=True))
    assert hybrid.version == HYBRID and hybrid.unified == str(tmp_path / "unified/kubepods/pod1")
    assert hybrid.controller("memory") == str(tmp_path / "memory/kubepods/pod1")
    v2 = dirs_for("/kubepods/pod1", CgroupLayout(V2, {}, tmp_path))
    assert v2.version == V2 and v2.controller("memory") == str(tmp_path / "kubepods/pod1")
    assert v2.controller("cpuacct") == v2.unified  # every controller lives in the one dir
    ctr = container_dirs("kubepods-pod1.slice:cri:abc", CgroupLayout(V2, {}, tmp_path))
    assert ctr.unified == str(tmp_path / "kubepods.slice/kubepods-pod1.slice/cri-abc.scope")


# ---- v1 -----------------------------------------------------------------------------


def test_v1_figures(tmp_path: Path) -> None:
    fill_v1(tmp_path, "/pod/ctr")
    d = dirs_for("/pod/ctr", v1_layout(tmp_path))
    cpu = read_cpu(d)
    assert cpu is not None and cpu.usage_ns == 5000000123
    assert (cpu.user_ns, cpu.system_ns) == (3000, 2000)
    assert (cpu.periods, cpu.throttled_periods, cpu.throttled_ns) == (10, 2, 99)
    assert read_cpu_usage(d) == 5000000123
    mem = read_memory(d)
    assert mem is not None
    assert (mem.usage, mem.working_set, mem.rss, mem.cache) == (122880, 102400, 81920, 40960)
    assert (mem.mapped_file, mem.page_faults, mem.major_page_faults) == (4096, 77, 5)
    assert mem.limit is None and mem.available == 0  # v1's "unlimited" value
    assert read_pids(d) is not None and read_pids(d).current == 3  # type: ignore[union-attr]
    assert read_pressure(d, "cpu") is None  # pure v1 has no PSI


def test_v1_limit_and_swap(tmp_path: Path) -> None:
    fill_v1(tmp_path, "/pod/ctr", limit=str(64 << 20))
    (tmp_path / "memory/pod/ctr/memory.memsw.limit_in_bytes").write_text(str(96 << 20))
    d = dirs_for("/pod/ctr", v1_layout(tmp_path))
    mem = read_memory(d)
    assert mem is not None and mem.limit == 64 << 20
    assert mem.available == (64 << 20) - 102400
    swap = read_swap(d)
    assert swap is not None
    assert swap.usage == 126976 - 122880  # memory+swap less memory
    assert swap.limit == 32 << 20 and swap.available == (32 << 20) - 4096


def test_v1_without_swap_accounting(tmp_path: Path) -> None:
    fill_v1(tmp_path, "/pod/ctr")
    (tmp_path / "memory/pod/ctr/memory.memsw.usage_in_bytes").unlink()
    assert read_swap(dirs_for("/pod/ctr", v1_layout(tmp_path))) is None


def test_hybrid_takes_psi_from_the_cgroup2_tree(tmp_path: Path) -> None:
    fill_v1(tmp_path, "/pod/ctr")
    write(tmp_path / "unified/pod/ctr", {"cpu.stat": "usage_usec 1\n", "cpu.pressure": PSI,
                                         "memory.pressure": PSI, "io.pressure": PSI})  # fmt: skip
    d = dirs_for("/pod/ctr", v1_layout(tmp_path, unified=True))
    assert read_cpu_usage(d) == 5000000123  # the v1 figure, in ns
    psi = read_pressure(d, "io")
    assert psi is not None and psi.some.total_ns == 123456000 and psi.some.avg10 == 1.5
    assert psi.full is not None and psi.full.total_ns == 789000
    gone = dirs_for("/pod/other", v1_layout(tmp_path, unified=True))
    assert read_pressure(gone, "cpu") is None


# ---- v2 -----------------------------------------------------------------------------


def test_v2_figures(tmp_path: Path) -> None:
    fill_v2(tmp_path / "pod/ctr", mem_max=str(1 << 30))
    d = dirs_for("/pod/ctr", CgroupLayout(V2, {}, tmp_path))
    cpu = read_cpu(d)
    assert cpu is not None and cpu.usage_ns == 5_000_000_000
    assert (cpu.user_ns, cpu.system_ns, cpu.throttled_ns) == (3e9, 2e9, 7000)
    mem = read_memory(d)
    assert mem is not None and (mem.usage, mem.working_set, mem.rss) == (122880, 102400, 81920)
    assert (mem.page_faults, mem.major_page_faults) == (77, 5)
    assert mem.limit == 1 << 30 and mem.available == (1 << 30) - 102400
    assert mem.stat["kernel"] == 1234
    swap = read_swap(d)
    assert swap is not None and swap.usage == 8192 and swap.limit is None and swap.available == 0
    pids = read_pids(d)
    assert pids is not None and (pids.current, pids.limit) == (3, 100)
    for resource in ("cpu", "memory", "io"):
        assert read_pressure(d, resource) is not None


def test_v2_unlimited_memory_and_pids(tmp_path: Path) -> None:
    fill_v2(tmp_path / "c")
    (tmp_path / "c/pids.max").write_text("max\n")
    d = dirs_for("/c", CgroupLayout(V2, {}, tmp_path))
    mem = read_memory(d)
    assert mem is not None and mem.limit is None and mem.available == 0
    assert read_pids(d).limit is None  # type: ignore[union-attr]


def test_working_set_never_negative(tmp_path: Path) -> None:
    fill_v2(tmp_path / "c")
    (tmp_path / "c/memory.current").write_text("4096\n")
    mem = read_memory(dirs_for("/c", CgroupLayout(V2, {}, tmp_path)))
    assert mem is not None and mem.working_set == 0


# ---- vanished files -----------------------------------------------------------------


@pytest.mark.parametrize("layout", ["v1", "hybrid", "v2"])
def test_vanished_cgroup_reads_as_none(tmp_path: Path, layout: str) -> None:
    lay = CgroupLayout(V2, {}, tmp_path) if layout == "v2" else v1_layout(
        tmp_path, unified=layout == "hybrid")  # fmt: skip
    d = dirs_for("/never/made", lay)
    for reader in (read_cpu, read_cpu_usage, read_memory, read_swap, read_pids):
        assert reader(d) is None
    assert read_pressure(d, "memory") is None


def test_memory_without_its_stat_file_is_none(tmp_path: Path) -> None:
    fill_v1(tmp_path, "/c")
    (tmp_path / "memory/c/memory.stat").unlink()
    assert read_memory(dirs_for("/c", v1_layout(tmp_path))) is None


def test_a_controller_the_host_lacks(tmp_path: Path) -> None:
    d = CgroupDirs(path="/c", version=V1, v1={"memory": str(tmp_path)})
    assert read_cpu(d) is None and read_pids(d) is None


# ---- parsers ------------------------------------------------------------------------


def test_parse_pressure() -> None:
    got = parse_pressure(PSI)
    assert got is not None and got.some.avg60 == 0.25 and got.some.total_ns == 123_456_000
    only_some = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n")
    assert only_some is not None and only_some.full is None
    assert parse_pressure("") is None
    assert parse_pressure("full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n") is None
    assert parse_pressure("some avg10=x avg60=0 avg300=0 total=1\n") is None


def test_keyed_files_and_limits(tmp_path: Path) -> None:
    f = tmp_path / "stat"
    f.write_text("a 1\nbroken line here\nb x\nc 3\n")
    assert read_keyed(str(f)) == {"a": 1, "c": 3}
    assert read_keyed(str(tmp_path / "missing")) is None
    f.write_text("max\n")
    assert read_limit(str(f)) is None
    f.write_text(f"{UNLIMITED_ABOVE + 1}\n")
    assert read_limit(str(f)) is None
    f.write_text("4096\n")
    assert read_limit(str(f)) == 4096


def test_host_has_swap(tmp_path: Path) -> None:
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:  100 kB\nSwapTotal:       0 kB\n")
    assert host_has_swap(str(f)) is False
    f.write_text("MemTotal:  100 kB\nSwapTotal:    2048 kB\n")
    assert host_has_swap(str(f)) is True
    assert host_has_swap(str(tmp_path / "missing")) is False
