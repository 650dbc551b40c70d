"""The image service through peapod's socket, against real docker-registry instances."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support.bad_servers import HangingServer, closed_port
from support.daemon import Peapod, metric_value, registries_conf_text
from support.images import (
    LAYERED_FILES,
    WHITEOUT_ABSENT,
    WHITEOUT_PRESENT,
    StandardImages,
    big_image,
    push,
)
from support.registry import AuthRegistry, Registry
from support.token_proxy import TokenRegistry

from api import api_pb2 as pb


@pytest.fixture(scope="module")
def peapod(
    registry: Registry, auth_registry: AuthRegistry, token_registry: TokenRegistry
) -> Iterator[Peapod]:
    hosts = [registry.host, auth_registry.host, token_registry.host]
    daemon = Peapod(registries_conf=registries_conf_text(hosts))
    try:
        yield daemon.start()
    finally:
        daemon.cleanup()


@pytest.fixture(autouse=True)
def clean_store(peapod: Peapod) -> Iterator[None]:
    """Every test starts and ends with an empty image store, and checks it is consistent."""
    remove_all(peapod)
    yield
    remove_all(peapod)
    assert_store_empty(peapod)


def remove_all(peapod: Peapod) -> None:
    for image in peapod.images.ListImages(pb.ListImagesRequest()).images:
        peapod.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image.id)))


def store_dir(peapod: Peapod) -> Path:
    return peapod.root / "images"


def layer_dirs(peapod: Peapod) -> set[str]:
    path = store_dir(peapod) / "layers"
    return {p.name for p in path.iterdir()} if path.exists() else set()


def tmp_entries(peapod: Peapod) -> list[str]:
    path = store_dir(peapod) / "tmp"
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


def assert_store_empty(peapod: Peapod) -> None:
    assert peapod.images.ListImages(pb.ListImagesRequest()).images == []
    assert layer_dirs(peapod) == set(), "layers left behind after every image was removed"
    assert tmp_entries(peapod) == [], "temporary files left behind"


def pull(peapod: Peapod, ref: str, auth: pb.AuthConfig | None = None, **kw: object) -> str:
    req = pb.PullImageRequest(image=pb.ImageSpec(image=ref))
    if auth is not None:
        req.auth.CopyFrom(auth)
    return peapod.images.PullImage(req, **kw).image_ref


def status(peapod: Peapod, ref: str, verbose: bool = False) -> pb.ImageStatusResponse:
    return peapod.images.ImageStatus(
        pb.ImageStatusRequest(image=pb.ImageSpec(image=ref), verbose=verbose)
    )


def rpc_error(fn: object, *args: object, **kw: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args, **kw)  # type: ignore[operator]
    return err.value


# ---------------------------------------------------------------- pulls


def test_pull_multilayer_list_status_by_every_reference_and_remove(
    peapod: Peapod, test_images: StandardImages
) -> None:
    layered = test_images.layered
    image_id = pull(peapod, layered.ref)
    assert image_id == layered.config_digest

    listed = peapod.images.ListImages(pb.ListImagesRequest()).images
    assert [i.id for i in listed] == [image_id]
    image = listed[0]
    assert list(image.repo_tags) == [layered.ref]
    assert list(image.repo_digests) == [layered.digest_ref]
    assert image.size == layered.image.size
    assert image.spec.image == image_id

    hex_id = image_id.removeprefix("sha256:")
    for ref in (image_id, hex_id, hex_id[:12], layered.ref, layered.digest_ref, layered.repo_ref):
        got = status(peapod, ref)
        assert got.image.id == image_id, f"ImageStatus({ref!r}) did not find the image"
    assert not status(peapod, f"{layered.repo_ref}:other").HasField("image")
    assert not status(peapod, "sha256:" + "0" * 64).HasField("image")

    verbose = status(peapod, image_id, verbose=True)
    info = json.loads(verbose.info["info"])
    assert info["manifestDigest"] == layered.digest
    assert len(info["layers"]) == 4
    assert info["imageSpec"]["config"]["WorkingDir"] == "/layered"

    # ListImages filtered by reference
    filtered = peapod.images.ListImages(
        pb.ListImagesRequest(filter=pb.ImageFilter(image=pb.ImageSpec(image=layered.ref)))
    ).images
    assert [i.id for i in filtered] == [image_id]

    # the unpacked layers really hold the image's files
    merged = overlay_view(peapod, info["layers"])
    for path, content in LAYERED_FILES.items():
        assert merged(path) == content

    peapod.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=layered.ref)))
    assert not status(peapod, image_id).HasField("image")
    assert peapod.images.ListImages(pb.ListImagesRequest()).images == []
    assert layer_dirs(peapod) == set()


def overlay_view(peapod: Peapod, diff_ids: list[str]):  # type: ignore[no-untyped-def]
    """Read files as an overlay mount of the given layers (bottom first) shows them."""
    lowers = [
        str(store_dir(peapod) / "layers" / d.removeprefix("sha256:") / "diff")
        for d in reversed(diff_ids)
    ]
    for lower in lowers:
        assert Path(lower).is_dir(), lower

    def read(path: str) -> bytes | None:
        with tempfile.TemporaryDirectory() as mnt:
            subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", "lowerdir=" + ":".join(lowers), mnt],
                check=True,
            )
            try:
                target = Path(mnt) / path.lstrip("/")
                return target.read_bytes() if target.exists() else None
            finally:
                subprocess.run(["umount", mnt], check=True)

    return read


def test_image_user_reported_as_uid_or_username(
    peapod: Peapod, test_images: StandardImages
) -> None:
    imgs = test_images
    pull(peapod, imgs.busybox_user.ref)
    pull(peapod, imgs.busybox_uid.ref)
    pull(peapod, imgs.busybox.ref)
    by_name = status(peapod, imgs.busybox_user.ref).image
    assert by_name.username == "peapod" and not by_name.HasField("uid")
    by_uid = status(peapod, imgs.busybox_uid.ref).image
    assert by_uid.HasField("uid") and by_uid.uid.value == 1000 and by_uid.username == ""
    root = status(peapod, imgs.busybox.ref).image
    assert not root.HasField("uid") and root.username == ""


def test_pull_by_digest(peapod: Peapod, test_images: StandardImages) -> None:
    busybox = test_images.busybox
    image_id = pull(peapod, busybox.digest_ref)
    assert image_id == busybox.config_digest
    image = status(peapod, busybox.digest_ref).image
    assert list(image.repo_digests) == [busybox.digest_ref]
    assert list(image.repo_tags) == []


@pytest.mark.parametrize("which", ["multiarch", "multiarch_oci"])
def test_index_selects_this_hosts_platform(
    peapod: Peapod, test_images: StandardImages, which: str
) -> None:
    index = getattr(test_images, which)
    assert len(index.platforms) >= 3
    image_id = pull(peapod, index.ref)
    assert image_id == index.host_image.config_digest
    image = status(peapod, index.ref).image
    # the repo digest is the index the caller named, as kubelet expects
    assert list(image.repo_digests) == [index.digest_ref]


def test_tags_share_one_image_and_removal_removes_all(
    peapod: Peapod, test_images: StandardImages
) -> None:
    tagged = test_images.tagged
    ids = {pull(peapod, tagged[t].ref) for t in ("one", "two", "three")}
    assert len(ids) == 1
    images = peapod.images.ListImages(pb.ListImagesRequest()).images
    assert len(images) == 1
    assert sorted(images[0].repo_tags) == sorted(tagged[t].ref for t in ("one", "two", "three"))
    peapod.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=tagged["two"].ref)))
    for t in ("one", "two", "three"):
        assert not status(peapod, tagged[t].ref).HasField("image")


def test_whiteouts_and_opaque_dirs_work_in_overlay(
    peapod: Peapod, test_images: StandardImages
) -> None:
    whiteouts = test_images.whiteouts
    pull(peapod, whiteouts.ref)
    info = json.loads(status(peapod, whiteouts.ref, verbose=True).info["info"])
    read = overlay_view(peapod, info["layers"])
    for path in WHITEOUT_PRESENT:
        assert read(path) is not None, path
    for path in WHITEOUT_ABSENT:
        assert read(path) is None, path


def test_zstd_oci_image(peapod: Peapod, test_images: StandardImages) -> None:
    zstd = test_images.zstd
    assert pull(peapod, zstd.ref) == zstd.config_digest
    info = json.loads(status(peapod, zstd.ref, verbose=True).info["info"])
    assert overlay_view(peapod, info["layers"])("/etc/peapod-zstd") == b"zstd\n"


def test_shared_layers_are_stored_once_and_kept_while_used(
    peapod: Peapod, test_images: StandardImages
) -> None:
    before = metric_value(peapod.metrics_text(), "peapod_image_layer_reuse_total")
    pull(peapod, test_images.busybox.ref)
    assert len(layer_dirs(peapod)) == 1
    pull(peapod, test_images.layered.ref)
    assert len(layer_dirs(peapod)) == 4  # the busybox layer is shared
    after = metric_value(peapod.metrics_text(), "peapod_image_layer_reuse_total")
    assert after == before + 1
    peapod.images.RemoveImage(
        pb.RemoveImageRequest(image=pb.ImageSpec(image=test_images.busybox.ref))
    )
    assert len(layer_dirs(peapod)) == 4  # still used by layered
    info = json.loads(status(peapod, test_images.layered.ref, verbose=True).info["info"])
    assert overlay_view(peapod, info["layers"])("/layered/one.txt") == b"one\n"


def test_concurrent_pulls_of_one_image_download_once(peapod: Peapod, registry: Registry) -> None:
    image = big_image(total_mb=12, layers=3, seed=7)
    pushed = push(registry.host, "concurrent", "v1", image)
    bytes_before = metric_value(peapod.metrics_text(), "peapod_image_pulls_bytes_total")
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(pull(peapod, pushed.ref))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert results == [pushed.config_digest] * 4
    downloaded = metric_value(peapod.metrics_text(), "peapod_image_pulls_bytes_total")
    # exactly one copy of the image's blobs crossed the wire
    assert downloaded - bytes_before == image.size


def test_image_fs_info_tracks_usage(peapod: Peapod, test_images: StandardImages) -> None:
    empty = peapod.images.ImageFsInfo(pb.ImageFsInfoRequest()).image_filesystems[0]
    pull(peapod, test_images.busybox.ref)
    full = peapod.images.ImageFsInfo(pb.ImageFsInfoRequest()).image_filesystems[0]
    assert full.fs_id.mountpoint.startswith(str(peapod.root))
    assert full.used_bytes.value > empty.used_bytes.value + 500_000  # busybox is ~1 MB+
    # busybox's applets are hard links to one file: a few dozen inodes, not hundreds
    assert full.inodes_used.value > empty.inodes_used.value + 10
    assert full.timestamp > 0


# ---------------------------------------------------------------- removal


def test_remove_is_idempotent_and_safe_concurrently(
    peapod: Peapod, test_images: StandardImages
) -> None:
    peapod.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image="sha256:" + "1" * 64)))
    peapod.images.RemoveImage(
        pb.RemoveImageRequest(image=pb.ImageSpec(image=test_images.busybox.ref))
    )
    image_id = pull(peapod, test_images.busybox.ref)
    errors: list[BaseException] = []

    def remove() -> None:
        try:
            peapod.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image_id)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=remove) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert not status(peapod, image_id).HasField("image")


# ---------------------------------------------------------------- auth


def test_basic_auth_registry(peapod: Peapod, auth_registry: AuthRegistry) -> None:
    ref = auth_registry.busybox.ref
    err = rpc_error(pull, peapod, ref)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert auth_registry.host in err.details()
    err = rpc_error(
        pull, peapod, ref, pb.AuthConfig(username=auth_registry.username, password="wrong")
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "reject" in err.details().lower()
    assert_store_empty(peapod)
    image_id = pull(
        peapod, ref, pb.AuthConfig(username=auth_registry.username, password=auth_registry.password)
    )
    assert image_id == auth_registry.busybox.config_digest
    remove_all(peapod)
    encoded = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode())
    assert pull(peapod, ref, pb.AuthConfig(auth=encoded.decode())) == image_id


def test_bearer_token_registry(peapod: Peapod, token_registry: TokenRegistry) -> None:
    ref = token_registry.busybox.ref
    token_registry.proxy.clear()
    err = rpc_error(
        pull, peapod, ref, pb.AuthConfig(username=token_registry.username, password="wrong")
    )
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    token_registry.proxy.clear()
    image_id = pull(
        peapod,
        ref,
        pb.AuthConfig(username=token_registry.username, password=token_registry.password),
    )
    assert image_id == token_registry.busybox.config_digest
    kinds = [(r.kind, r.status) for r in token_registry.proxy.requests]
    assert ("token", 200) in kinds
    bearer = [r for r in token_registry.proxy.requests if r.auth_scheme == "bearer"]
    assert bearer and all(r.status in (200, 307) for r in bearer)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "ref",
    ["", "Upper/Case:tag", "busybox@sha256:zzz", "busybox:bad tag", "a//b", "host:port:more/x"],
)
def test_malformed_references_are_invalid_argument(peapod: Peapod, ref: str) -> None:
    err = rpc_error(pull, peapod, ref)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details()


def test_unreachable_registries_are_unavailable(peapod: Peapod) -> None:
    with closed_port() as port:
        err = rpc_error(pull, peapod, f"127.0.0.1:{port}/busybox:latest")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert f"127.0.0.1:{port}" in err.details()
    err = rpc_error(pull, peapod, "no-such-registry.invalid/busybox:latest", timeout=60)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "no-such-registry.invalid" in err.details()


def test_missing_manifest_and_repository_are_not_found(
    peapod: Peapod, test_images: StandardImages
) -> None:
    for ref in (test_images.missing_tag_ref, test_images.missing_repo_ref):
        err = rpc_error(pull, peapod, ref)
        assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
        assert ref.split("/", 1)[1].split(":")[0] in err.details()


def test_corrupted_blob_is_data_loss_and_leaves_nothing(peapod: Peapod, registry: Registry) -> None:
    image = big_image(total_mb=2, layers=2, seed=99)
    pushed = push(registry.host, "corrupt", "v1", image)
    registry.corrupt_blob(image.layers[-1].digest)
    err = rpc_error(pull, peapod, pushed.ref)
    assert err.code() == grpc.StatusCode.DATA_LOSS
    assert "digest" in err.details().lower()
    assert peapod.images.ListImages(pb.ListImagesRequest()).images == []
    assert tmp_entries(peapod) == []


def test_hanging_registry_ends_at_the_deadline(peapod: Peapod) -> None:
    with HangingServer() as hang:
        start = time.monotonic()
        err = rpc_error(pull, peapod, f"{hang.host}/busybox:latest", timeout=2)
        elapsed = time.monotonic() - start
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 4
    # the daemon stops the pull itself: nothing half-done remains, and it still serves
    deadline = time.monotonic() + 5
    while tmp_entries(peapod) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tmp_entries(peapod) == []
    assert peapod.runtime.Version(pb.VersionRequest()).runtime_name == "peapod"


def test_registries_conf_blocked_mirror_and_search(
    peapod: Peapod, test_images: StandardImages, registry: Registry
) -> None:
    host = registry.host
    dropins = peapod.base / "registries.conf.d"
    dropins.mkdir(exist_ok=True)
    conf = dropins / "50-test.conf"
    try:
        # blocked
        conf.write_text(f'[[registry]]\nlocation = "{host}"\ninsecure = true\nblocked = true\n')
        err = rpc_error(pull, peapod, test_images.busybox.ref)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "blocked" in err.details()
        # a mirror serves a registry that does not exist
        conf.write_text(
            '[[registry]]\nprefix = "mirrored.invalid"\nlocation = "mirrored.invalid"\n'
            f'[[registry.mirror]]\nlocation = "{host}"\ninsecure = true\n'
        )
        image_id = pull(peapod, "mirrored.invalid/busybox:latest")
        assert image_id == test_images.busybox.config_digest
        assert "mirrored.invalid/busybox:latest" in status(peapod, image_id).image.repo_tags
        remove_all(peapod)
        # a dead mirror falls back to the registry itself
        with closed_port() as dead:
            conf.write_text(
                f'[[registry]]\nlocation = "{host}"\ninsecure = true\n'
                f'[[registry.mirror]]\nlocation = "127.0.0.1:{dead}"\ninsecure = true\n'
            )
            assert pull(peapod, test_images.busybox.ref) == image_id
        remove_all(peapod)
        # short names resolve through unqualified-search-registries
        conf.write_text(f'unqualified-search-registries = ["{host}"]\n')
        assert pull(peapod, "busybox") == image_id
        assert status(peapod, "busybox").image.id == image_id
        assert f"{host}/busybox:latest" in status(peapod, image_id).image.repo_tags
    finally:
        conf.unlink(missing_ok=True)


def test_plain_http_registry_needs_insecure(peapod: Peapod, registry: Registry) -> None:
    """TLS is the default: a registry not marked insecure is spoken to over HTTPS only."""
    # 'localhost:PORT' is the same registry under a name registries.conf does not mark insecure
    ref = f"localhost:{registry.port}/busybox:latest"
    err = rpc_error(pull, peapod, ref)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "insecure" in err.details()


def test_pull_metrics(peapod: Peapod, test_images: StandardImages) -> None:
    text = peapod.metrics_text()
    ok = metric_value(text, "peapod_image_pulls_total", {"result": "success"})
    missing = metric_value(text, "peapod_image_pulls_total", {"result": "NOT_FOUND"})
    pull(peapod, test_images.busybox.ref)
    rpc_error(pull, peapod, test_images.missing_tag_ref)
    text = peapod.metrics_text()
    assert metric_value(text, "peapod_image_pulls_total", {"result": "success"}) == ok + 1
    assert metric_value(text, "peapod_image_pulls_total", {"result": "NOT_FOUND"}) == missing + 1
    assert metric_value(text, "peapod_image_pulls_bytes_total") > 0


def test_restart_keeps_images_and_cleans_crash_leftovers(
    peapod: Peapod, test_images: StandardImages
) -> None:
    image_id = pull(peapod, test_images.busybox.ref)
    assert peapod.stop() == 0
    # what a crash mid-pull leaves: a partial download and a half-unpacked layer
    tmp = store_dir(peapod) / "tmp"
    tmp.mkdir(exist_ok=True)
    (tmp / "partial-download").write_bytes(os.urandom(1000))
    (tmp / "unpack-half").mkdir()
    peapod.start()
    assert status(peapod, test_images.busybox.ref).image.id == image_id
    assert tmp_entries(peapod) == []


def test_cancelled_pull_stops_at_once(peapod: Peapod) -> None:
    """A caller that gives up (no deadline) makes peapod drop the registry connection now."""
    conf = peapod.base / "registries.conf.d" / "60-hang.conf"
    conf.parent.mkdir(exist_ok=True)
    with HangingServer(mode="headers") as hang:
        # plain HTTP, so the stall is in the manifest body rather than a TLS handshake
        conf.write_text(f'[[registry]]\nlocation = "{hang.host}"\ninsecure = true\n')
        before = metric_value(
            peapod.metrics_text(), "peapod_image_pulls_total", {"result": "CANCELLED"}
        )
        future = peapod.images.PullImage.future(
            pb.PullImageRequest(image=pb.ImageSpec(image=f"{hang.host}/busybox:latest"))
        )
        deadline = time.monotonic() + 10  # the TLS probe of an insecure registry comes first
        while not hang.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hang.requests, "the pull never reached the stalled registry"
        future.cancel()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not all(_peer_closed(c) for c in hang._conns):
            time.sleep(0.05)
        assert all(_peer_closed(c) for c in hang._conns), "peapod kept the connection open"
    conf.unlink()
    text = peapod.metrics_text()
    assert metric_value(text, "peapod_image_pulls_total", {"result": "CANCELLED"}) == before + 1
    assert tmp_entries(peapod) == []


def _peer_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, TimeoutError):  # nothing to read yet: still open
        return False
    except OSError:
        return True


def test_sigterm_with_a_pull_in_flight_stops_within_the_grace() -> None:
    """A pull stuck on a registry neither blocks shutdown past the grace nor leaves files."""
    with HangingServer(mode="headers") as hang:
        daemon = Peapod(
            config={"shutdown_grace": 1.0},
            registries_conf=f'[[registry]]\nlocation = "{hang.host}"\ninsecure = true\n',
        )
        try:
            daemon.start()
            future = daemon.images.PullImage.future(
                pb.PullImageRequest(image=pb.ImageSpec(image=f"{hang.host}/busybox:latest"))
            )
            deadline = time.monotonic() + 10
            while not hang.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            assert hang.requests, "the pull never reached the stalled registry"
            assert daemon.proc is not None
            daemon.proc.send_signal(15)
            start = time.monotonic()
            code = daemon.proc.wait(15)
            assert time.monotonic() - start < 8, "shutdown waited far past shutdown_grace"
            assert code == 0, daemon.log_tail()
            with pytest.raises(grpc.RpcError):
                future.result(timeout=5)
            assert tmp_entries(daemon) == []
        finally:
            daemon.cleanup()
