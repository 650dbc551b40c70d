"""SupplementalGroupsPolicy through peapod's socket, with real runc.

The image is built here: busybox with User "peapod" (1000:1000), whose /etc/group makes
peapod a member of "extra" (2000) and "tools" (2001), and lists only nobody in "others"
(2002). Merge (the default) gives the container process those groups plus the
requested ones; Strict gives only the requested ones. The groups are read from the
kernel (``id -G`` in an exec; the Groups line of the container process's status, read
from the host) and compared with what ContainerStatus reports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.container_env import ContainerEnv, container_env
from support.images import (
    GROUPS,
    TarBuilder,
    build_image,
    busybox_rootfs_layer,
    push,
)
from support.registry import Registry

from api import api_pb2 as pb

REQUESTED = 3000
GROUP_FILE = "".join(f"{name}:x:{gid}:{','.join(members)}\n"
                     for name, (gid, members) in GROUPS.items() if name != "extra")  # fmt: skip
GROUP_FILE += "extra:x:2000:peapod\ntools:x:2001:root,peapod\nothers:x:2002:nobody\n"


@pytest.fixture(scope="module")
def image(registry: Registry) -> str:
    groups = TarBuilder().file("etc/group", GROUP_FILE.encode()).layer()
    built = build_image([busybox_rootfs_layer(), groups], {"User": "peapod"})
    return push(registry.host, "busybox-groups", "latest", built).ref


@pytest.fixture(scope="module")
def env(registry: Registry, image: str) -> Iterator[ContainerEnv]:
    with container_env(registry, "groups", [image]) as e:
        yield e


@pytest.fixture(autouse=True)
def clean(env: ContainerEnv) -> Iterator[None]:
    yield
    env.remove_all()
    assert env.containers() == []
    assert env.leftovers() == {}


def security(policy: int, **kw: object) -> pb.LinuxContainerConfig:
    ctx = pb.LinuxContainerSecurityContext(supplemental_groups=[REQUESTED],
                                           supplemental_groups_policy=policy, **kw)  # fmt: skip
    return pb.LinuxContainerConfig(security_context=ctx)


def kernel_groups(env: ContainerEnv, ctr: str) -> tuple[list[int], list[int]]:
    """The groups of an exec'd process (id -G) and of the container's process (from the host)."""
    exec_groups = [int(g) for g in env.sh(ctr, "id -G").split()]
    req = pb.ContainerStatusRequest(container_id=ctr, verbose=True)
    pid = json.loads(env.rt.ContainerStatus(req, timeout=10).info["info"])["pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(ln for ln in status.splitlines() if ln.startswith("Groups:"))
    return exec_groups, [int(g) for g in line.split()[1:]]


def test_status_advertises_the_policy(env: ContainerEnv) -> None:
    assert env.rt.Status(pb.StatusRequest(), timeout=10).features.supplemental_groups_policy


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(pb.Merge, [1000, 2000, 2001, REQUESTED]), (pb.Strict, [1000, REQUESTED])],
    ids=["merge", "strict"],
)
def test_policy_decides_the_image_groups(
    env: ContainerEnv, image: str, policy: int, expected: list[int]
) -> None:
    pod = env.pod()
    ctr = env.run(pod, image, ["sleep", "1000"], linux=security(policy))
    exec_groups, init_groups = kernel_groups(env, ctr)
    assert exec_groups == expected  # the primary gid first, then the sorted rest
    assert sorted(init_groups) == expected
    user = env.status(ctr).user.linux
    assert (user.uid, user.gid) == (1000, 1000)
    assert sorted(user.supplemental_groups) == expected


def test_merge_follows_run_as_user(env: ContainerEnv, image: str) -> None:
    """run_as_user 0 is root: its image groups (tools) are merged, not peapod's."""
    pod = env.pod()
    ctr = env.run(pod, image, ["sleep", "1000"],
                  linux=security(pb.Merge, run_as_user=pb.Int64Value(value=0)))  # fmt: skip
    exec_groups, _ = kernel_groups(env, ctr)
    assert exec_groups == [0, 2001, REQUESTED]
    user = env.status(ctr).user.linux
    assert (user.uid, user.gid, sorted(user.supplemental_groups)) == (0, 0, [0, 2001, REQUESTED])
