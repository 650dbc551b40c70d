"""Chaos: a seeded multi-threaded CRI workload while the daemon is killed -9 and restarted.

``support.chaos`` drives it: pods with and without containers, host ports, PID
namespaces per pod, ExecSync, from three threads; the daemon is SIGKILLed every 2-6 s
and started again. Afterwards every container started and never stopped must still be
RUNNING with its process alive, no call may have answered INTERNAL or UNKNOWN, and
removing everything through the CRI must leave nothing (``support.census``: mounts,
veths, host-local reservations, cgroups, iptables rules and chains, conmon and infra
processes, run/state directories, database rows).

Bounded for CI (``PEAPOD_CHAOS_SECONDS``, 60 s of workload); the seed is fixed
(``PEAPOD_CHAOS_SEED``) and printed. ``tests/bench/chaos.py --ops N`` is the long run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from support.chaos import Chaos
from support.daemon import registries_conf_text
from support.images import StandardImages
from support.pods import PLUGIN_DIR, HostState, PodEnv
from support.registry import Registry

from api import api_pb2 as pb

SEED = int(os.environ.get("PEAPOD_CHAOS_SEED", "4242"))
SECONDS = float(os.environ.get("PEAPOD_CHAOS_SECONDS", "60"))


@pytest.fixture
def env(registry: Registry, test_images: StandardImages) -> Iterator[PodEnv]:
    if os.geteuid() != 0:
        pytest.fail("the chaos test needs root (namespaces, mounts, cgroups, iptables)")
    for tool in ("bridge", "host-local", "portmap", "loopback"):
        if not os.access(f"{PLUGIN_DIR}/{tool}", os.X_OK):
            pytest.fail(f"CNI plugin {PLUGIN_DIR}/{tool} missing; run deploy/setup.sh test")
    for tool in ("conmon", "runc", "catatonit", "iptables-save"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing; run deploy/setup.sh test")
    state = HostState()
    e = PodEnv()
    e.peapod.registries_conf.write_text(registries_conf_text([registry.host]))
    try:
        e.peapod.start()
        e.peapod.images.PullImage(pb.PullImageRequest(
            image=pb.ImageSpec(image=test_images.busybox.ref)), timeout=60)
        yield e
    finally:
        e.sweep()
        state.restore()


@pytest.mark.integration
def test_chaos_kill_restart_leaves_nothing(env: PodEnv, test_images: StandardImages) -> None:
    print(f"\nchaos: seed {SEED}, {SECONDS:.0f} s; reproduce with PEAPOD_CHAOS_SEED={SEED}")
    result = Chaos(env, test_images.busybox.ref, SEED, seconds=SECONDS).run()
    print(result.report())
    assert result.kills >= 3, f"only {result.kills} kills in {SECONDS} s"
    assert result.ops["RunPodSandbox"] >= 10 and result.ops["ExecSync"] >= 10, result.ops
    assert result.errors == [], "INTERNAL/UNKNOWN answers:\n" + "\n".join(result.errors)
    assert result.lost == [], "lost across kills:\n" + "\n".join(result.lost)
    assert result.cleanup == [], "removal through the CRI failed:\n" + "\n".join(result.cleanup)
    assert result.leaks == {}, f"left after removing everything: {result.leaks}"
