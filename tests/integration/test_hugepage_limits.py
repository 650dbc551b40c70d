"""Hugepage limits as the kubelet sends them: one per page size the kernel has, limit 0.

On a hybrid host whose hugetlb controller sits on the cgroup2 mount, runc's v1 manager
has no hugetlb hierarchy and refuses any hugepage limit ("cannot set hugetlb limit:
container could not join or create cgroup"), so every kubelet pod failed with
CreateContainerError. peapod leaves the limits out there, as CRI-O does, and applies
them where runc can.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.daemon import Peapod, registries_conf_text
from support.images import StandardImages
from support.registry import Registry

from api import api_pb2 as pb
from sandbox.cgroup_layout import detect_layout
from sandbox.cgroups import hierarchy_roots
from sandbox.mounts import MOUNTINFO, parse_mountinfo


def kernel_page_sizes() -> list[str]:
    """The kernel's hugepage sizes as the kubelet names them (2048kB -> 2MB, ... 1GB)."""
    sizes = []
    for d in sorted(Path("/sys/kernel/mm/hugepages").glob("hugepages-*kB")):
        kib = int(d.name.removeprefix("hugepages-").removesuffix("kB"))
        sizes.append(f"{kib // (1 << 20)}GB" if kib >= 1 << 20 else f"{kib // 1024}MB")
    return sizes


def runc_has_hugetlb() -> bool:
    """A v1 hugetlb hierarchy is mounted, or (pure v2) cgroup2 offers hugetlb."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.exists():
        return "hugetlb" in v2.read_text().split()
    return any(e.fstype == "cgroup" and "hugetlb" in e.super_options.split(",")
               for e in parse_mountinfo(MOUNTINFO.read_text()))


@pytest.fixture
def daemon(registry: Registry) -> Iterator[tuple[Peapod, str]]:
    if os.geteuid() != 0:
        pytest.fail("needs root (mounts, cgroups, namespaces)")
    parent = f"peapod-huge-{secrets.token_hex(3)}"
    p = Peapod(registries_conf=registries_conf_text([registry.host]),
               config={"sandbox": {"default_cgroup_parent": parent}})
    try:
        p.start()
        yield p, parent
    finally:
        if p.proc is not None:
            for pod in p.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items:
                p.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id),
                                           timeout=60)
        p.cleanup()
        for root in hierarchy_roots(detect_layout()):  # the parent peapod made for the pod
            for d in sorted((root / parent).glob("**/"), key=lambda d: -len(d.parts)):
                d.rmdir()


def test_kubelet_hugepage_limits_do_not_stop_a_container(
    daemon: tuple[Peapod, str], test_images: StandardImages, tmp_path: Path
) -> None:
    peapod, parent = daemon
    sizes = kernel_page_sizes()
    if not sizes:
        pytest.fail("the kernel lists no hugepage sizes; the kubelet would send no limits")
    rt = peapod.runtime
    image = test_images.busybox.ref
    peapod.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=60)
    uid = secrets.token_hex(6)
    pod_cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"huge-{uid}", uid=uid, namespace="test"),
        log_directory=str(tmp_path), linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=f"/{parent}/pod{uid}"))
    pod_cfg.linux.security_context.namespace_options.network = pb.NODE
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg), timeout=60).pod_sandbox_id
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"),
                             image=pb.ImageSpec(image=image), command=["sleep", "600"],
                             log_path="c.log")
    cfg.linux.resources.hugepage_limits.extend(
        pb.HugepageLimit(page_size=size, limit=0) for size in sizes)
    ctr = rt.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg), timeout=60).container_id
    rt.StartContainer(pb.StartContainerRequest(container_id=ctr), timeout=60)
    status = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True),
                                timeout=10)
    assert status.status.state == pb.CONTAINER_RUNNING
    spec = json.loads(status.info["info"])["runtimeSpec"]
    limits = spec["linux"]["resources"].get("hugepageLimits")
    if runc_has_hugetlb():
        assert limits == [{"pageSize": s, "limit": 0} for s in sizes]
    else:  # e.g. this hybrid VM: hugetlb only on the cgroup2 mount
        assert limits is None
