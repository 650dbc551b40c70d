"""Image volumes and recursive read-only mounts through peapod's socket, with real runc.

The volume image is built here: busybox, then a layer with /vol (files, a directory,
a link that climbs out of the image, one that is absolute inside it) and a last layer
that whites one file out. Containers run the plain busybox image and mount the volume
image at /mnt/...; every test ends with all pods removed and nothing of theirs left
(mounts, processes, runtime state, container dirs).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.container_env import ContainerEnv, container_env
from support.images import (
    BuiltImage,
    PushedImage,
    TarBuilder,
    build_image,
    busybox_rootfs_layer,
    push,
    push_busybox,
)
from support.registry import Registry

from api import api_pb2 as pb
from sandbox.mounts import umount_all

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def volume_image() -> BuiltImage:
    """busybox + /vol (hello.txt, sub/deep.txt, gone.txt, links) + a layer removing gone.txt."""
    files = (
        TarBuilder()
        .file("vol/hello.txt", b"hello from the image\n")
        .file("vol/gone.txt", b"whited out by the next layer\n")
        .file("vol/sub/deep.txt", b"deep\n")
        .symlink("vol/escape", "../../../../..")
        .symlink("vol/abs", "/vol/sub")
        .layer()
    )
    whiteout = TarBuilder().whiteout("vol/gone.txt").layer()
    return build_image([busybox_rootfs_layer(), files, whiteout])


class Images:
    def __init__(self, busybox: PushedImage, volume: PushedImage) -> None:
        self.busybox = busybox.ref
        self.volume = volume.ref


@pytest.fixture(scope="module")
def images(registry: Registry) -> Images:
    return Images(
        push_busybox(registry.host, repo="busybox-imgvol"),
        push(registry.host, "imgvol", "v1", volume_image()),
    )


@pytest.fixture(scope="module")
def env(registry: Registry, images: Images) -> Iterator[ContainerEnv]:
    with container_env(registry, "imgvol", [images.busybox, images.volume]) as e:
        yield e


@pytest.fixture(autouse=True)
def clean(env: ContainerEnv, images: Images) -> Iterator[None]:
    """Each test ends with every pod removed, nothing left, and the volume image present."""
    yield
    env.remove_all()
    assert env.containers() == []
    assert env.leftovers() == {}
    if not env.image_present(images.volume):
        env.pull(images.volume)


def volume(image: str, path: str = "/mnt/vol", sub_path: str = "", **kw: object) -> pb.Mount:
    kw.setdefault("readonly", True)
    spec = pb.ImageSpec(image=image, user_specified_image=image)
    return pb.Mount(container_path=path, image=spec, image_sub_path=sub_path,
                    **kw)  # type: ignore[arg-type]  # fmt: skip


def failed(env: ContainerEnv, script: str, ctr: str) -> pb.ExecSyncResponse:
    got = env.exec(ctr, ["sh", "-c", script])
    assert got.exit_code != 0, f"{script!r} succeeded in the container"
    return got


# ---- image volumes ------------------------------------------------------------------


def test_image_volume_is_read_only_layered_and_reported(env: ContainerEnv, images: Images) -> None:
    image_id = env.pull(images.volume)
    pod = env.pod()
    ctr = env.run(pod, images.busybox, ["sleep", "1000"], mounts=[volume(images.volume)])

    assert env.sh(ctr, "cat /mnt/vol/vol/hello.txt") == "hello from the image\n"
    assert env.sh(ctr, "cat /mnt/vol/vol/sub/deep.txt") == "deep\n"
    failed(env, "test -e /mnt/vol/vol/gone.txt", ctr)  # the top layer's whiteout holds
    for write in ("touch /mnt/vol/new", "echo x >> /mnt/vol/vol/hello.txt",
                  "rm /mnt/vol/vol/hello.txt", "mkdir /mnt/vol/d"):  # fmt: skip
        got = failed(env, write, ctr)
        assert b"Read-only file system" in got.stderr, (write, got.stderr)
    assert env.sh(ctr, "cat /mnt/vol/vol/hello.txt") == "hello from the image\n"
    # Not noexec unless asked: the image's own busybox runs from the volume.
    assert env.sh(ctr, "/mnt/vol/bin/busybox echo ran") == "ran\n"
    options = env.sh(ctr, "grep ' /mnt/vol ' /proc/self/mounts").split()[3].split(",")
    assert "ro" in options and "nosuid" in options and "nodev" in options

    st = env.status(ctr)
    [mount] = [m for m in st.mounts if m.container_path == "/mnt/vol"]
    assert mount.readonly and mount.host_path == "" and mount.image_sub_path == ""
    assert mount.image.image == images.volume
    assert mount.image.user_specified_image == images.volume
    assert mount.image.image_ref == image_id  # what PullImage answered: the image's ID
    assert image_id.startswith("sha256:")


def test_image_volume_by_id_with_noexec(env: ContainerEnv, images: Images) -> None:
    image_id = env.pull(images.volume)
    pod = env.pod()
    mounts = [volume(image_id, mount_options=["noexec"])]
    ctr = env.run(pod, images.busybox, ["sleep", "1000"], mounts=mounts)
    assert env.sh(ctr, "cat /mnt/vol/vol/hello.txt") == "hello from the image\n"
    got = failed(env, "/mnt/vol/bin/busybox echo ran", ctr)
    assert b"Permission denied" in got.stderr, got.stderr
    [mount] = [m for m in env.status(ctr).mounts if m.container_path == "/mnt/vol"]
    assert mount.image.image == image_id and mount.image.image_ref == image_id


def test_image_sub_paths(env: ContainerEnv, images: Images) -> None:
    pod = env.pod()
    mounts = [
        volume(images.volume, "/mnt/sub", "vol/sub"),
        volume(images.volume, "/mnt/linked", "vol/abs"),  # an absolute link, inside the image
        volume(images.volume, "/mnt/file.txt", "vol/hello.txt"),
        volume(images.volume, "/mnt/dot", "./vol/./sub/"),
    ]
    ctr = env.run(pod, images.busybox, ["sleep", "1000"], mounts=mounts)
    assert env.sh(ctr, "ls /mnt/sub") == "deep.txt\n"
    assert env.sh(ctr, "ls /mnt/linked") == "deep.txt\n"
    assert env.sh(ctr, "ls /mnt/dot") == "deep.txt\n"
    assert env.sh(ctr, "cat /mnt/file.txt") == "hello from the image\n"
    failed(env, "touch /mnt/sub/new", ctr)
    failed(env, "echo x > /mnt/file.txt", ctr)
    reported = {m.container_path: m.image_sub_path for m in env.status(ctr).mounts}
    assert reported == {"/mnt/sub": "vol/sub", "/mnt/linked": "vol/abs",
                        "/mnt/file.txt": "vol/hello.txt", "/mnt/dot": "./vol/./sub/"}  # fmt: skip


@pytest.mark.parametrize(
    ("mount", "code", "words"),
    [
        (dict(image="{absent}"), PRECONDITION, ["is not present on this node", "pull it first"]),
        (dict(sub_path="../etc"), INVALID, ["without '..'"]),
        (dict(sub_path="vol/../../etc"), INVALID, ["without '..'"]),
        (dict(sub_path="/etc"), INVALID, ["relative to the image's root"]),
        (dict(sub_path="vol/escape"), INVALID, ["outside the image"]),
        (dict(sub_path="vol/escape/etc"), INVALID, ["outside the image"]),
        (dict(sub_path="vol/nope"), INVALID, ["does not exist in image"]),
        (dict(sub_path="vol/hello.txt/x"), INVALID, ["is not a directory"]),
        (dict(sub_path="vol/gone.txt"), INVALID, ["does not exist in image"]),
        (dict(readonly=False), INVALID, ["must be readonly"]),
        (dict(host_path="/tmp"), INVALID, ["both an image and host_path"]),
        (dict(propagation=pb.PROPAGATION_HOST_TO_CONTAINER), INVALID, ["must be private"]),
    ],
    ids=["absent-image", "dotdot", "inner-dotdot", "absolute", "link-escape",
         "through-link-escape", "missing", "through-file", "whited-out", "writable",
         "host-path-too", "propagation"],
)
def test_bad_image_volumes_are_refused_and_leave_nothing(
    env: ContainerEnv, images: Images, mount: dict[str, object], code: grpc.StatusCode,
    words: list[str],
) -> None:  # fmt: skip
    absent = f"{images.volume.rsplit(':', 1)[0]}:not-pulled"
    image = str(mount.pop("image", images.volume)).format(absent=absent)
    sub_path = str(mount.pop("sub_path", ""))
    pod = env.pod()
    with pytest.raises(grpc.RpcError) as err:
        env.create(pod, images.busybox, ["sleep", "1000"],
                   mounts=[volume(image, sub_path=sub_path, **mount)])  # fmt: skip
    assert err.value.code() == code, err.value.details()
    details = err.value.details() or ""
    assert all(w in details for w in words), details
    assert "/mnt/vol" in details
    if image == absent:
        assert absent in details
    assert env.containers() == [] and env.container_leftovers() == {}
    # No row or hold keeps the image: it can be removed at once.
    env.remove_image(images.volume)
    assert not env.image_present(images.volume)


def test_remove_image_refused_while_a_container_mounts_it(
    env: ContainerEnv, images: Images
) -> None:
    image_id = env.pull(images.volume)
    pod = env.pod()
    ctr = env.create(pod, images.busybox, ["sleep", "1000"], mounts=[volume(images.volume)])
    for ref in (images.volume, image_id):
        with pytest.raises(grpc.RpcError) as err:
            env.remove_image(ref)
        assert err.value.code() == PRECONDITION, err.value.details()
        assert ctr in (err.value.details() or "") and "in use" in (err.value.details() or "")
    assert env.image_present(images.volume)
    env.start(ctr)
    assert env.sh(ctr, "cat /mnt/vol/vol/hello.txt") == "hello from the image\n"
    env.remove(ctr)
    env.remove_image(images.volume)
    assert not env.image_present(images.volume)
    # The busybox container image was never the reason: it is still there.
    assert env.image_present(images.busybox)


def test_image_volume_outlives_a_daemon_restart_and_goes_with_its_container(
    env: ContainerEnv, images: Images
) -> None:
    pod = env.pod()
    ctr = env.run(pod, images.busybox, ["sleep", "1000"], mounts=[volume(images.volume)])
    volumes_dir = env.peapod.runroot / "containers"
    assert any(str(volumes_dir) in m and "/volumes/" in m for m in env.mounts()), env.mounts()
    env.peapod.stop(signal.SIGKILL)
    env.peapod.start()
    assert env.sh(ctr, "cat /mnt/vol/vol/hello.txt") == "hello from the image\n"
    [mount] = [m for m in env.status(ctr).mounts if m.container_path == "/mnt/vol"]
    assert mount.image.image == images.volume
    with pytest.raises(grpc.RpcError) as err:
        env.remove_image(images.volume)
    assert err.value.code() == PRECONDITION
    env.remove(ctr)
    assert not [m for m in env.mounts() if "/volumes/" in m]


# ---- recursive read-only --------------------------------------------------------------


@contextlib.contextmanager
def dir_with_submount(base: Path) -> Iterator[Path]:
    """``base/tree`` holding a file, with a tmpfs mounted on ``tree/sub``; unmounted after."""
    tree = base / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "top.txt").write_text("top\n")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tree / "sub")],
                   check=True)  # fmt: skip
    try:
        (tree / "sub" / "inner.txt").write_text("inner\n")
        yield tree
    finally:
        umount_all(tree / "sub")


def test_recursive_read_only_reaches_submounts(env: ContainerEnv, images: Images) -> None:
    handlers = env.rt.Status(pb.StatusRequest(), timeout=10).runtime_handlers
    assert handlers and all(h.features.recursive_read_only_mounts for h in handlers)
    with dir_with_submount(env.base) as tree:
        pod = env.pod()
        mounts = [
            pb.Mount(container_path="/mnt/rro", host_path=str(tree), readonly=True,
                     recursive_read_only=True),
            pb.Mount(container_path="/mnt/ro", host_path=str(tree), readonly=True),
        ]  # fmt: skip
        ctr = env.run(pod, images.busybox, ["sleep", "1000"], mounts=mounts)
        assert env.sh(ctr, "cat /mnt/rro/top.txt /mnt/rro/sub/inner.txt") == "top\ninner\n"
        for path in ("/mnt/rro/x", "/mnt/rro/sub/x", "/mnt/ro/x"):
            got = failed(env, f"touch {path}", ctr)
            assert b"Read-only file system" in got.stderr, (path, got.stderr)
        # Plain readonly leaves the submount writable: the tree really has a submount.
        env.sh(ctr, "touch /mnt/ro/sub/written")
        assert (tree / "sub" / "written").exists()
        reported = {m.container_path: m.recursive_read_only for m in env.status(ctr).mounts}
        assert reported == {"/mnt/rro": True, "/mnt/ro": False}
        env.remove_all()
