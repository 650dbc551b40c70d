"""Pods in their own user namespace (``hostUsers: false``) through peapod's socket, real runc.

The image is built here: busybox, then a layer with /data holding a root-owned file and
one owned by 1000:1000. Pods get uids 0-65535 on host uids from HOST_UID and gids on
host gids from HOST_GID (different, so a mix-up shows). What the kernel says is read
from the host (/proc/<pid>/uid_map and status of the container process, owners of
files in the layer store and in the container's upper dir) and from inside (id, stat).
Every test ends with all pods removed and nothing of theirs left; every refused
request also leaves no pod row, mount, pinned namespace or cgroup.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.container_env import ContainerEnv, container_env
from support.images import TarBuilder, build_image, busybox_rootfs_layer, push
from support.registry import Registry

from api import api_pb2 as pb
from sandbox.cgroup_layout import detect_layout
from sandbox.cgroups import hierarchy_roots

HOST_UID, HOST_GID, LENGTH = 200000, 300000, 65536
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
NS_GET_USERNS = 0xB701  # _IO(0xb7, 0x1)


@pytest.fixture(scope="module")
def image(registry: Registry) -> str:
    data = (TarBuilder().file("data/rootfile", b"root's\n")
            .file("data/owned", b"peapod's\n", uid=1000, gid=1000).layer())  # fmt: skip
    return push(registry.host, "busybox-userns", "latest",
                build_image([busybox_rootfs_layer(), data])).ref  # fmt: skip


@pytest.fixture(scope="module")
def env(registry: Registry, image: str) -> Iterator[ContainerEnv]:
    with container_env(registry, "userns", [image]) as e:
        yield e


@pytest.fixture(autouse=True)
def clean(env: ContainerEnv) -> Iterator[None]:
    if env.peapod.proc is None or env.peapod.proc.poll() is not None:
        env.peapod.start()  # a restart test failed half-way
    yield
    env.remove_all()
    assert env.containers() == []
    assert env.leftovers() == {}
    assert pod_cgroups(env) == []


def mappings(first: int, length: int = LENGTH, container: int = 0) -> list[pb.IDMapping]:
    return [pb.IDMapping(container_id=container, host_id=first, length=length)]


def userns(uids: list[pb.IDMapping] | None = None, gids: list[pb.IDMapping] | None = None,
           mode: int = pb.POD) -> pb.UserNamespace:  # fmt: skip
    if mode != pb.POD:
        return pb.UserNamespace(mode=mode, uids=uids or [], gids=gids or [])
    return pb.UserNamespace(mode=mode, uids=mappings(HOST_UID) if uids is None else uids,
                            gids=mappings(HOST_GID) if gids is None else gids)  # fmt: skip


def pod_config(
    env: ContainerEnv, options: pb.UserNamespace | None,
    sysctls: dict[str, str] | None = None, **ns: int,
) -> pb.PodSandboxConfig:
    uid = os.urandom(6).hex()
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"p{uid}", uid=uid, namespace="userns"),
        log_directory=str(env.logs / uid),
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(userns_options=options, **ns))),
    )  # fmt: skip
    cfg.linux.sysctls.update(sysctls or {})
    return cfg


def run_pod(env: ContainerEnv, options: pb.UserNamespace | None = None, **kw: object) -> str:
    cfg = pod_config(env, userns() if options is None else options, **kw)  # type: ignore[arg-type]
    return str(env.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60)
               .pod_sandbox_id)  # fmt: skip


def in_pod_userns(options: pb.UserNamespace | None = None) -> pb.LinuxContainerConfig:
    """The container's security context as the kubelet sends it: the pod's userns_options."""
    ctx = pb.LinuxContainerSecurityContext(
        namespace_options=pb.NamespaceOption(userns_options=options or userns()))
    return pb.LinuxContainerConfig(security_context=ctx)


def mapped(container_path: str, host_path: Path, **kw: object) -> pb.Mount:
    """A bind mount the way the kubelet sends it for a userns pod: with the pod's mappings."""
    return pb.Mount(container_path=container_path, host_path=str(host_path),
                    uidMappings=mappings(HOST_UID), gidMappings=mappings(HOST_GID),
                    **kw)  # type: ignore[arg-type]  # fmt: skip


def host_pid(env: ContainerEnv, ctr: str) -> int:
    req = pb.ContainerStatusRequest(container_id=ctr, verbose=True)
    return int(json.loads(env.rt.ContainerStatus(req, timeout=10).info["info"])["pid"])


def owner_of(ns_file: Path) -> int:
    """The inode of the user namespace owning the namespace at ``ns_file`` (NS_GET_USERNS)."""
    fd = os.open(ns_file, os.O_RDONLY)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
        try:
            return os.fstat(owner).st_ino
        finally:
            os.close(owner)
    finally:
        os.close(fd)


def pod_cgroups(env: ContainerEnv) -> list[str]:
    found = []
    for root in hierarchy_roots(detect_layout()):
        top = root / env.cgroup_parent
        if top.is_dir():
            found += [str(p) for p in top.iterdir() if p.is_dir()]
    return found


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value.code()  # type: ignore[no-any-return]


def nothing_left(env: ContainerEnv) -> None:
    assert env.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10).items == []
    assert env.leftovers() == {}  # mounts (pinned namespaces included), processes, dirs
    assert pod_cgroups(env) == []
    pods = env.peapod.runroot / "pods"
    assert not pods.is_dir() or list(pods.iterdir()) == []


# ---- what the kernel sees -------------------------------------------------------------


def test_status_advertises_user_namespaces(env: ContainerEnv) -> None:
    resp = env.rt.Status(pb.StatusRequest(), timeout=10)
    assert [h.features.user_namespaces for h in resp.runtime_handlers] == [True, True]


def test_container_root_is_an_unprivileged_host_uid(env: ContainerEnv, image: str) -> None:
    pod = run_pod(env)
    ctr = env.run(pod, image, ["sleep", "1000"], linux=in_pod_userns())
    pid = host_pid(env, ctr)
    assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", str(HOST_UID), str(LENGTH)]
    assert Path(f"/proc/{pid}/gid_map").read_text().split() == ["0", str(HOST_GID), str(LENGTH)]
    status = Path(f"/proc/{pid}/status").read_text()
    [uids] = [ln.split()[1:] for ln in status.splitlines() if ln.startswith("Uid:")]
    [gids] = [ln.split()[1:] for ln in status.splitlines() if ln.startswith("Gid:")]
    assert uids == [str(HOST_UID)] * 4 and gids == [str(HOST_GID)] * 4
    assert env.sh(ctr, "id -u; id -g") == "0\n0\n"
    # The container is in the pod's namespaces, and the user namespace owns all the others.
    user = Path(f"/proc/{pid}/ns/user").stat().st_ino
    for kind in ("net", "ipc", "uts", "pid"):
        assert owner_of(Path(f"/proc/{pid}/ns/{kind}")) == user, kind
    pod_status = env.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod),
                                         timeout=10).status  # fmt: skip
    options = pod_status.linux.namespaces.options.userns_options
    assert options.mode == pb.POD
    assert [(m.container_id, m.host_id, m.length) for m in options.uids] == [(0, HOST_UID, LENGTH)]


def test_pod_sysctls_and_hostname_are_set_inside(env: ContainerEnv, image: str) -> None:
    pod = run_pod(env, sysctls={"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"})
    ctr = env.run(pod, image, ["sleep", "1000"], linux=in_pod_userns())
    got = env.sh(ctr, "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni; hostname")
    assert got.split() == ["1", "1234", f"{pod[:12]}"]
    assert env.sh(ctr, "ip -o link show lo").count("UP") >= 1


def test_rootfs_looks_root_owned_inside_without_chowning_layers(
    env: ContainerEnv, image: str
) -> None:
    pod = run_pod(env)
    ctr = env.run(pod, image, ["sleep", "1000"], linux=in_pod_userns())
    got = env.sh(ctr, "stat -c '%u:%g %n' /bin/busybox /etc/passwd /data/rootfile /data/owned /")
    assert got.splitlines() == ["0:0 /bin/busybox", "0:0 /etc/passwd", "0:0 /data/rootfile",
                                "1000:1000 /data/owned", "0:0 /"]  # fmt: skip
    assert env.sh(ctr, "ls -ln /bin/busybox").split()[2:4] == ["0", "0"]
    # The layer store is untouched: still host root's files, nothing copied.
    layers = list((env.peapod.root / "images" / "layers").glob("*/diff"))
    owners = {(p / rel).stat().st_uid for p in layers for rel in ("bin/busybox", "data/owned")
              if (p / rel).exists()}  # fmt: skip
    assert owners == {0, 1000}
    # Only the overlay is mounted for the rootfs: the ID-mapped layer copies were detached.
    assert [m for m in env.mounts() if "/idmap/" in m] == []


def test_writes_land_on_the_upper_layer_with_the_mapped_ids(
    env: ContainerEnv, image: str
) -> None:
    pod = run_pod(env)
    ctr = env.run(pod, image, ["sleep", "1000"], linux=in_pod_userns())
    env.sh(ctr, "echo new > /newfile && mkdir /newdir && echo more >> /data/owned "
                "&& chown 7:8 /newdir")  # fmt: skip
    upper = env.peapod.root / "containers" / ctr / "upper"
    assert (upper / "newfile").stat().st_uid == HOST_UID
    assert (upper / "newfile").stat().st_gid == HOST_GID
    assert ((upper / "newdir").stat().st_uid, (upper / "newdir").stat().st_gid) == (
        HOST_UID + 7, HOST_GID + 8)  # fmt: skip
    copied = (upper / "data" / "owned").stat()  # copied up from the ID-mapped lower layer
    assert (copied.st_uid, copied.st_gid) == (HOST_UID + 1000, HOST_GID + 1000)
    assert env.sh(ctr, "stat -c %u:%g /newfile /newdir /data/owned").split() == [
        "0:0", "7:8", "1000:1000"]  # fmt: skip


def test_id_mapped_bind_mounts(env: ContainerEnv, image: str, tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "by-root").write_text("host root's\n")
    os.chown(volume / "by-root", 0, 0)
    plain = tmp_path / "plain"
    plain.mkdir()
    pod = run_pod(env)
    mounts = [mapped("/vol", volume), pb.Mount(container_path="/plain", host_path=str(plain))]
    ctr = env.run(pod, image, ["sleep", "1000"], linux=in_pod_userns(), mounts=mounts)
    # Host root's files are root's inside, and root inside writes host root's files.
    assert env.sh(ctr, "stat -c %u:%g /vol/by-root") == "0:0\n"
    env.sh(ctr, "echo from-inside > /vol/written && mkdir /vol/d && chown 5:6 /vol/d")
    assert ((volume / "written").stat().st_uid, (volume / "written").stat().st_gid) == (0, 0)
    assert ((volume / "d").stat().st_uid, (volume / "d").stat().st_gid) == (5, 6)
    # A mount without mappings is not mapped: host root shows as the overflow id.
    assert env.sh(ctr, "stat -c %u /plain") == "65534\n"
    assert [m for m in env.mounts() if "/idmap/" in m] == []  # the runtime holds its copies
    [status] = [m for m in env.status(ctr).mounts if m.container_path == "/vol"]
    assert status.host_path == str(volume)


def test_image_volumes_show_their_owners_inside(env: ContainerEnv, image: str) -> None:
    """An image volume's overlay stacks ID-mapped layers too (an overlay cannot be mapped)."""
    pod = run_pod(env)
    volume = pb.Mount(container_path="/mnt/img", image=pb.ImageSpec(image=image),
                      readonly=True, uidMappings=mappings(HOST_UID),
                      gidMappings=mappings(HOST_GID))  # fmt: skip
    ctr = env.run(pod, image, ["sleep", "1000"], linux=in_pod_userns(), mounts=[volume])
    got = env.sh(ctr, "stat -c '%u:%g' /mnt/img/bin/busybox /mnt/img/data/owned")
    assert got.split() == ["0:0", "1000:1000"]
    assert env.sh(ctr, "cat /mnt/img/data/rootfile") == "root's\n"
    assert [m for m in env.mounts() if "/idmap/" in m] == []


def reaches(path: Path, uid: int, gid: int) -> bool:
    """Whether a process with only ``uid`` and ``gid`` (no capabilities) can stat ``path``."""
    run = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                          "stat", "-c", "%n", str(path)], capture_output=True)  # fmt: skip
    return run.returncode == 0


BUNDLE_FILES = ("ctl", "winsz", "attach", "pidfile", "conmon-pidfile", "config.json",
                "rootfs/etc/passwd")  # fmt: skip
NOBODY = 65534


def test_other_host_users_reach_nothing_in_a_running_bundle(env: ContainerEnv, image: str) -> None:
    """conmon's FIFOs and attach socket, the pidfiles, config.json and the rootfs of a plain
    and of a user-namespaced container are out of reach of host users; only the pod's root
    group (runc's init inside the pod's user namespace) may search a userns bundle."""
    plain_pod = run_pod(env, pb.UserNamespace(mode=pb.NODE))
    plain = env.run(plain_pod, image, ["sleep", "1000"], tty=True, stdin=True)
    pod = run_pod(env)
    own = env.run(pod, image, ["sleep", "1000"], tty=True, stdin=True, linux=in_pod_userns())
    bundles = env.peapod.runroot / "containers"
    for ctr in (plain, own):
        bundle = bundles / ctr
        for name in BUNDLE_FILES:
            assert (bundle / name).exists(), name
            assert not reaches(bundle / name, NOBODY, NOBODY), (ctr == own, name)
            assert not reaches(bundle / name, HOST_UID + 1, HOST_GID + 1), (ctr == own, name)
        assert (bundle / "config.json").stat().st_mode & 0o777 == 0o600
    assert (bundles / plain).stat().st_mode & 0o777 == 0o700
    got = (bundles / own).stat()
    assert (got.st_mode & 0o777, got.st_uid, got.st_gid) == (0o710, 0, HOST_GID)
    assert reaches(bundles / own / "rootfs" / "etc" / "passwd", HOST_UID, HOST_GID)
    assert not reaches(bundles / plain / "rootfs" / "etc" / "passwd", HOST_UID, HOST_GID)
    # The container works as before: attach socket and FIFOs in use, the rootfs its own.
    assert env.sh(own, "id -u; stat -c %u:%g /etc/passwd") == "0\n0:0\n"


def test_other_host_users_reach_nothing_in_a_pod_directory(env: ContainerEnv, image: str) -> None:
    """A pod's files (its 1777 shm, hosts, resolv.conf, pinned namespaces) are out of reach
    of host users; only a user-namespaced pod's root group may search its pod directory."""
    plain_pod = run_pod(env, pb.UserNamespace(mode=pb.NODE))
    env.run(plain_pod, image, ["sleep", "1000"])
    pod = run_pod(env)
    own = env.run(pod, image, ["sleep", "1000"], linux=in_pod_userns())
    pods = env.peapod.runroot / "pods"
    for pod_id in (plain_pod, pod):
        shm = pods / pod_id / "shm"
        assert shm.is_dir() and shm.stat().st_mode & 0o7777 == 0o1777
        for target in (shm, pods / pod_id / "hosts", pods / pod_id / "resolv.conf"):
            assert not reaches(target, NOBODY, NOBODY), (pod_id == pod, target)
    assert (pods / plain_pod).stat().st_mode & 0o777 == 0o700
    got = (pods / pod).stat()
    assert (got.st_mode & 0o777, got.st_uid, got.st_gid) == (0o710, 0, HOST_GID)
    assert reaches(pods / pod / "shm", HOST_UID, HOST_GID)
    # The userns container still binds them: /dev/shm writable, /etc/hosts readable.
    assert env.sh(own, "touch /dev/shm/x && head -c0 /etc/hosts && echo ok") == "ok\n"


def test_a_filesystem_without_idmap_support_is_a_failed_precondition(
    env: ContainerEnv, image: str, tmp_path: Path
) -> None:
    ramfs = tmp_path / "ramfs"  # ramfs cannot map ids (tmpfs can)
    ramfs.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(ramfs)], check=True)
    try:
        pod = run_pod(env)
        req = pb.CreateContainerRequest(pod_sandbox_id=pod, config=pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image=image),
            command=["true"], mounts=[mapped("/vol", ramfs)], linux=in_pod_userns()))  # fmt: skip
        with pytest.raises(grpc.RpcError) as info:
            env.rt.CreateContainer(req, timeout=60)
        assert info.value.code() == PRECONDITION
        assert "ramfs" in info.value.details() and "cannot map ids" in info.value.details()
        assert env.containers() == []
        assert env.container_leftovers() == {}
    finally:
        subprocess.run(["umount", str(ramfs)], check=True)


# ---- refused requests leave nothing ---------------------------------------------------


BAD_PODS = {
    "two uid mappings": userns(uids=mappings(HOST_UID, 10) + mappings(HOST_UID + 100, 10, 10)),
    "container uid 0 not mapped": userns(uids=mappings(HOST_UID, container=1)),
    "container gid 0 not mapped": userns(gids=mappings(HOST_GID, container=5)),
    "mode CONTAINER": userns(mode=pb.CONTAINER),
    "mode TARGET": userns(mode=pb.TARGET),
    "mappings with mode NODE": userns(mappings(HOST_UID), mappings(HOST_GID), mode=pb.NODE),
    "overflowing uids": userns(uids=mappings(2**32 - 100, 200)),
    "overflowing container ids": userns(gids=mappings(HOST_GID, 2**32 - 1)),
    "overlapping mappings": userns(uids=mappings(HOST_UID, 100)
                                   + mappings(HOST_UID + 50, 100, 100)),
    "host root mapped in": userns(uids=mappings(0)),
    "no mappings": userns(uids=[], gids=[]),
}


@pytest.mark.parametrize("case", sorted(BAD_PODS))
def test_bad_user_namespaces_are_refused_and_leave_nothing(env: ContainerEnv, case: str) -> None:
    cfg = pod_config(env, BAD_PODS[case])
    assert code_of(lambda: env.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg),
                                                timeout=60)) == INVALID  # fmt: skip
    nothing_left(env)


def test_userns_pod_with_host_network_is_refused(env: ContainerEnv) -> None:
    cfg = pod_config(env, userns(), network=pb.NODE)
    assert code_of(lambda: env.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg),
                                                timeout=60)) == INVALID  # fmt: skip
    nothing_left(env)


def test_a_failure_inside_the_new_namespaces_rolls_everything_back(env: ContainerEnv) -> None:
    """The kernel refuses the sysctl value inside the pod's namespaces, after the user
    namespace, its mappings and the pins exist: all of it goes again."""
    cfg = pod_config(env, userns(), sysctls={"net.ipv4.ip_local_port_range": "9 nine"})
    with pytest.raises(grpc.RpcError) as info:
        env.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60)
    assert info.value.code() == INVALID
    assert "net.ipv4.ip_local_port_range" in info.value.details()
    nothing_left(env)


def test_container_namespace_options_must_follow_the_pod(env: ContainerEnv, image: str,
                                                         tmp_path: Path) -> None:  # fmt: skip
    pod = run_pod(env)
    plain = run_pod(env, pb.UserNamespace(mode=pb.NODE))

    def create(pod_id: str, linux: pb.LinuxContainerConfig, mounts: list[pb.Mount]) -> None:
        req = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image=image),
            command=["true"], linux=linux, mounts=mounts))  # fmt: skip
        env.rt.CreateContainer(req, timeout=60)

    other = userns(uids=mappings(HOST_UID + LENGTH))
    cases = [
        (pod, in_pod_userns(pb.UserNamespace(mode=pb.NODE)), []),
        (pod, in_pod_userns(other), []),
        (plain, in_pod_userns(), []),
        (plain, pb.LinuxContainerConfig(), [mapped("/vol", tmp_path)]),
        (pod, in_pod_userns(),
         [mapped("/vol", tmp_path, propagation=pb.PROPAGATION_HOST_TO_CONTAINER)]),
    ]  # fmt: skip
    for pod_id, linux, mounts in cases:
        assert code_of(lambda p=pod_id, lx=linux, ms=mounts: create(p, lx, ms)) == INVALID
        assert env.containers() == []
        assert env.container_leftovers() == {}
    # Without userns_options the container follows its pod.
    ctr = env.run(pod, image, ["sleep", "1000"])
    assert Path(f"/proc/{host_pid(env, ctr)}/uid_map").read_text().split()[1] == str(HOST_UID)


# ---- restart ---------------------------------------------------------------------------


def test_a_restarted_daemon_recovers_the_userns_pod(env: ContainerEnv, image: str) -> None:
    pod = run_pod(env)
    ctr = env.run(pod, image, ["sleep", "1000"], linux=in_pod_userns())
    pid = host_pid(env, ctr)
    env.peapod.stop(signal.SIGKILL)
    env.peapod.start()
    req = pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)
    got = env.rt.PodSandboxStatus(req, timeout=10)
    assert got.status.state == pb.SANDBOX_READY
    pinned = json.loads(got.info["info"])["namespaces"]
    assert sorted(pinned) == ["ipc", "net", "user", "uts"]
    assert host_pid(env, ctr) == pid and env.sh(ctr, "id -u") == "0\n"
    second = env.run(pod, image, ["sleep", "1000"], name="after", linux=in_pod_userns())
    assert Path(f"/proc/{host_pid(env, second)}/ns/user").stat().st_ino == (
        Path(pinned["user"]).stat().st_ino)  # fmt: skip
    assert env.sh(second, "stat -c %u:%g /bin/busybox") == "0:0\n"
