"""CPU rates between samples, writable-layer walks under a budget, net/dev parsing, and
one cgroup read turned into the CRI's parts."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from oci.stats.cgroups import dirs_for
from oci.stats.cpu_rate import CpuRates
from oci.stats.layers import LayerUsages, TreeWalk
from oci.stats.network import parse_net_dev, split_default
from oci.stats.sampling import read_figures
from sandbox.cgroup_layout import V2, CgroupLayout

S = 1_000_000_000

# ---- usage_nano_cores ----------------------------------------------------------------


def test_first_sample_has_no_rate_the_second_a_second_later_has() -> None:
    r = CpuRates()
    assert r.observe("c", 10 * S, 0) is None
    assert r.observe("c", 11 * S, S // 2) == S // 2


def test_rate_a_little_under_a_second_apart_is_still_given() -> None:
    r = CpuRates()
    r.observe("c", 10 * S, 0)
    assert r.observe("c", 10 * S + 990_000_000, 990_000_000) == S


def test_interleaved_pollers_get_a_rate_over_at_least_a_second() -> None:
    """Poller A at t=10, 20; poller B at 10.05, 20.05: B's rate spans ~10 s, not 50 ms."""
    r = CpuRates()
    r.observe("c", 10 * S, 0)
    r.observe("c", 10 * S + 50_000_000, 50_000_000)
    r.observe("c", 20 * S, 2 * S)  # 2 s of CPU over the next ~10 s
    rate = r.observe("c", 20 * S + 50_000_000, 2 * S)  # idle during the last 50 ms
    assert rate is not None and abs(rate - 195_000_000) < 1_000_000


def test_too_close_samples_and_resets() -> None:
    r = CpuRates()
    r.observe("c", 10 * S, 100)
    assert r.observe("c", 10 * S + 1_000_000, 200) is None  # 1 ms: no meaningful rate
    assert r.observe("c", 12 * S, 50) is None  # counter went back: a new cgroup
    assert r.observe("c", 13 * S, 50 + S) == S


def test_samples_are_bounded_and_forgotten() -> None:
    r = CpuRates(max_samples=4)
    for i in range(100):
        r.observe("c", 10 * S + i * 1_000_000, i)
    assert len(r._samples["c"]) <= 4
    r.observe("d", S, 0)
    r.retain(["d"])
    assert set(r._samples) == {"d"} and len(r) == 1


# ---- writable layers -----------------------------------------------------------------


def make_tree(root: Path) -> None:
    (root / "a/b").mkdir(parents=True)
    (root / "a/one").write_bytes(b"x" * 1000)
    (root / "a/b/two").write_bytes(b"y" * 500)
    os.link(root / "a/one", root / "a/b/one-again")
    (root / "link").symlink_to("a/one")  # 5 bytes of target


def test_walk_counts_bytes_once_per_inode_and_directories(tmp_path: Path) -> None:
    make_tree(tmp_path)
    walk = TreeWalk(str(tmp_path))
    walk.step(1_000_000)
    assert walk.done
    assert walk.used_bytes == 1000 + 500 + 5
    assert walk.inodes_used == 3 + 3  # root, a, a/b; one, two, link


def test_walk_resumes_within_its_budget(tmp_path: Path) -> None:
    for i in range(10):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}/f").write_bytes(b"z" * 10)
    walk = TreeWalk(str(tmp_path))
    steps = 0
    while not walk.done:
        assert walk.step(3) <= 10 + 1  # a listing is never split, so at most one dir's worth
        steps += 1
    assert steps > 3 and walk.used_bytes == 100 and walk.inodes_used == 21


def test_missing_layer_is_empty(tmp_path: Path) -> None:
    walk = TreeWalk(str(tmp_path / "gone"))
    walk.step(10)
    assert walk.done and walk.used_bytes == 0 and walk.inodes_used == 0


def test_rounds_share_one_budget_and_serve_complete_figures(tmp_path: Path) -> None:
    big, small = tmp_path / "big", tmp_path / "small"
    for i in range(50):
        (big / f"d{i}").mkdir(parents=True)
        (big / f"d{i}/f").write_bytes(b"b")
    small.mkdir()
    (small / "f").write_bytes(b"s" * 7)
    usages = LayerUsages(budget=20)
    uppers = {"a-big": str(big), "b-small": str(small)}
    assert usages.get("a-big") is None
    usages.walk_round(uppers)
    partial = usages.get("a-big")
    assert partial is not None and not partial.complete and partial.used_bytes < 50
    assert usages.get("b-small") is None  # the budget ran out in the big layer
    rounds = 1
    while usages.get("b-small") is None or not usages.get("a-big").complete:  # type: ignore[union-attr]
        usages.walk_round(uppers)
        rounds += 1
        assert rounds < 20
    assert usages.get("a-big").used_bytes == 50  # type: ignore[union-attr]
    assert usages.get("b-small").used_bytes == 7  # type: ignore[union-attr]
    (big / "d0/f").write_bytes(b"b" * 11)
    while usages.get("a-big").used_bytes == 50:  # type: ignore[union-attr]
        usages.walk_round(uppers)  # the old complete figure is served until the new one
        assert usages.get("a-big").complete  # type: ignore[union-attr]
    assert usages.get("a-big").used_bytes == 60  # type: ignore[union-attr]
    usages.walk_round({"b-small": str(small)})
    assert usages.get("a-big") is None


def test_only_new_rounds_and_stopping(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    usages = LayerUsages(budget=100)
    usages.walk_round({"x": str(tmp_path / "x")})
    (tmp_path / "y").mkdir()
    (tmp_path / "y/f").write_bytes(b"1")
    stop = threading.Event()
    stop.set()
    assert usages.walk_round({"x": str(tmp_path / "x"), "y": str(tmp_path / "y")},
                             only_new=True, stop=stop) == 0  # fmt: skip
    usages.walk_round({"x": str(tmp_path / "x"), "y": str(tmp_path / "y")}, only_new=True)
    assert usages.get("y").used_bytes == 1  # type: ignore[union-attr]



def test_early_rounds_for_new_layers_do_not_restart_the_full_rounds(tmp_path: Path) -> None:
    """A full round resumes after the last layer the previous full round reached, even
    when early rounds (only_new, for containers just created) ran in between: with
    containers coming all the time the layers late in the order are still walked again."""
    uppers = {}
    for name in ("a", "b", "c"):
        for i in range(10):
            (tmp_path / name / f"f{i}").parent.mkdir(exist_ok=True)
            (tmp_path / name / f"f{i}").write_bytes(b"x")
        uppers[name] = str(tmp_path / name)
    usages = LayerUsages(budget=10)  # one layer a round
    for _ in range(3):
        usages.walk_round(uppers)
    assert all(usages.get(n).used_bytes == 10 for n in uppers)  # type: ignore[union-attr]
    (tmp_path / "c/f0").write_bytes(b"x" * 11)
    for k in range(6):  # a full round, then an early one for a new container, and so on
        usages.walk_round(uppers)
        (tmp_path / f"new{k}").mkdir()
        uppers[f"new{k}"] = str(tmp_path / f"new{k}")
        usages.walk_round(uppers, only_new=True)
        assert usages.get(f"new{k}") is not None
    assert usages.get("c").used_bytes == 20  # type: ignore[union-attr]

# ---- network -------------------------------------------------------------------------

NET_DEV = "\n".join([
    "Inter-|   Receive                            |  Transmit",
    " face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop ...",
    "    lo: 100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0",
    "  eth0: 5000 40 1 2 0 0 0 0 3000 30 3 4 0 0 0 0",
    " net1:10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0",
    " bad: 1 2 3",
])


def test_parse_net_dev_and_the_default_interface() -> None:
    ifaces = parse_net_dev(NET_DEV)
    assert [i.name for i in ifaces] == ["lo", "eth0", "net1"]
    eth0 = ifaces[1]
    assert (eth0.rx_bytes, eth0.rx_packets, eth0.rx_errors, eth0.rx_dropped) == (5000, 40, 1, 2)
    assert (eth0.tx_bytes, eth0.tx_packets, eth0.tx_errors, eth0.tx_dropped) == (3000, 30, 3, 4)
    default, others = split_default(ifaces)
    assert default is eth0 and [i.name for i in others] == ["net1"]
    default, others = split_default([i for i in ifaces if i.name != "eth0"])
    assert default is not None and default.name == "net1" and others == []
    assert split_default(ifaces[:1]) == (None, [])


# ---- one read ------------------------------------------------------------------------


def test_read_figures_on_v2_and_when_gone(tmp_path: Path) -> None:
    d = tmp_path / "pod"
    d.mkdir()
    for name, text in {
        "cpu.stat": "usage_usec 2000000\n", "memory.current": "8192\n",
        "memory.stat": "anon 4096\ninactive_file 4096\npgfault 3\npgmajfault 1\n",
        "memory.max": "max\n", "memory.swap.current": "0\n", "memory.swap.max": "max\n",
        "pids.current": "4\n", "io.pressure": "some avg10=0 avg60=0 avg300=0 total=9\n",
    }.items():  # fmt: skip
        (d / name).write_text(text)
    dirs = dirs_for("/pod", CgroupLayout(V2, {}, tmp_path))
    rates = CpuRates()
    got = read_figures(dirs, "p", rates, swap=True, pids=True)
    assert got.cpu is not None and got.cpu.usage_core_ns == 2 * S and got.cpu.psi is None
    assert got.cpu.usage_nano_cores is None and got.cpu.timestamp > 0
    assert got.memory is not None and got.memory.working_set_bytes == 4096
    assert got.memory.available_bytes == 0 and got.memory.rss_bytes == 4096
    assert got.swap is not None and got.swap.usage_bytes == 0
    assert got.io is not None and got.io.psi.some.total_ns == 9000
    assert got.process is not None and got.process.process_count == 4
    no_swap = read_figures(dirs, "p", rates, swap=False)
    assert no_swap.swap is None and no_swap.process is None
    gone = read_figures(dirs_for("/gone", CgroupLayout(V2, {}, tmp_path)), "g", rates, swap=True)
    assert (gone.cpu, gone.memory, gone.swap, gone.io) == (None, None, None, None)
