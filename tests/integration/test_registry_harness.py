"""The registry test harness works against the real docker-registry."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import io
import json
import re
import socket
import tarfile
import time
from urllib.parse import urlencode, urlsplit

import pytest
from support.bad_servers import HangingServer, closed_port
from support.images import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    StandardImages,
    TarBuilder,
    big_image,
    build_image,
    busybox_image,
    host_arch,
    push,
    request,
    sha256_digest,
    whiteout_layers,
)
from support.registry import AuthRegistry, Registry
from support.token_proxy import TokenRegistry


def _get(host: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(host, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _parse_challenge(header: str) -> dict[str, str]:
    scheme, _, params = header.partition(" ")
    assert scheme == "Bearer"
    return dict(re.findall(r'(\w+)="([^"]*)"', params))


def test_standard_images_round_trip(test_images: StandardImages) -> None:
    host = test_images.host
    bb = test_images.busybox
    status, headers, body = _get(host, "/v2/busybox/manifests/latest", {"Accept": DOCKER_MANIFEST})
    assert status == 200
    assert headers["content-type"] == DOCKER_MANIFEST
    assert headers["docker-content-digest"] == bb.digest == sha256_digest(body)
    assert body == bb.image.manifest_bytes
    manifest = json.loads(body)
    status, _, config = _get(host, f"/v2/busybox/blobs/{manifest['config']['digest']}")
    assert status == 200 and sha256_digest(config) == bb.config_digest
    assert json.loads(config)["rootfs"]["diff_ids"] == [test_images.base_layer.diff_id]
    status, _, layer = _get(host, f"/v2/busybox/blobs/{test_images.base_layer_digest}")
    assert status == 200 and sha256_digest(layer) == test_images.base_layer_digest
    assert hashlib.sha256(gzip.decompress(layer)).hexdigest() == bb.image.diff_ids[0][7:]

    assert bb.user is None and (bb.uid, bb.username) == (0, "root")
    assert test_images.busybox_user.user == "peapod"
    assert test_images.busybox_uid.user == "1000:1000"
    assert (test_images.busybox_uid.uid, test_images.busybox_uid.gid) == (1000, 1000)
    assert len({bb.digest, test_images.busybox_user.digest, test_images.busybox_uid.digest}) == 3

    digests = {p.digest for p in test_images.tagged.values()}
    assert sorted(test_images.tagged) == ["one", "three", "two"] and len(digests) == 1
    status, _, body = _get(host, "/v2/tagged/tags/list")
    assert sorted(json.loads(body)["tags"]) == ["one", "three", "two"]

    for index, media in (
        (test_images.multiarch, DOCKER_MANIFEST_LIST),
        (test_images.multiarch_oci, OCI_INDEX),
    ):
        status, headers, body = _get(
            host, f"/v2/multiarch/manifests/{index.tag}", {"Accept": MANIFEST_ACCEPT}
        )
        assert (status, headers["content-type"]) == (200, media)
        assert sha256_digest(body) == index.digest
        assert len(index.platforms) == 3 and f"linux/{host_arch()}" in index.platforms
        entry = index.host_image
        assert entry.config["architecture"] == host_arch()
        status, _, child = _get(
            host, f"/v2/multiarch/manifests/{entry.manifest_digest}", {"Accept": MANIFEST_ACCEPT}
        )
        assert status == 200 and child == entry.manifest_bytes
    assert test_images.multiarch_oci.host_image.manifest_media_type == OCI_MANIFEST

    status, headers, body = _get(host, "/v2/zstd/manifests/latest", {"Accept": MANIFEST_ACCEPT})
    assert (status, headers["content-type"]) == (200, OCI_MANIFEST)
    assert {layer["mediaType"] for layer in json.loads(body)["layers"]} == {OCI_LAYER_ZSTD}

    layered = test_images.layered.image
    assert len(layered.layers) == 4
    assert layered.layers[0].digest == test_images.base_layer_digest


def test_images_are_reproducible(test_images: StandardImages) -> None:
    assert busybox_image().manifest_digest == test_images.busybox.digest
    small = big_image(total_mb=1, layers=2, files_per_layer=10, runnable=False)
    again = big_image(total_mb=1, layers=2, files_per_layer=10, runnable=False)
    assert small.manifest_digest == again.manifest_digest and len(small.layers) == 2
    assert small.size > 1 << 20  # random data does not compress
    names = []
    for layer in whiteout_layers():
        with tarfile.open(fileobj=io.BytesIO(layer.tar)) as tar:
            names.append(tar.getnames())
    assert "data/.wh.gone" in names[1] and "opaque/.wh..wh..opq" in names[1]
    assert "opaque/a" in names[0] and "opaque/b" in names[1]


def test_auth_registry_needs_credentials(auth_registry: AuthRegistry) -> None:
    host = auth_registry.host
    path = "/v2/busybox/manifests/latest"
    accept = {"Accept": DOCKER_MANIFEST}
    status, headers, _ = _get(host, path, accept)
    assert status == 401 and headers["www-authenticate"].startswith("Basic ")
    assert (
        request(host, "GET", path, headers=accept, auth=(auth_registry.username, "no")).status
        == 401
    )
    resp = request(host, "GET", path, headers=accept, auth=auth_registry.auth)
    assert resp.status == 200
    assert resp.headers["docker-content-digest"] == auth_registry.busybox.digest


def test_token_flow(token_registry: TokenRegistry) -> None:
    proxy = token_registry.proxy
    proxy.clear()
    host = token_registry.host
    path = "/v2/busybox/manifests/latest"
    accept = {"Accept": DOCKER_MANIFEST}

    status, headers, _ = _get(host, path, accept)
    assert status == 401
    challenge = _parse_challenge(headers["www-authenticate"])
    assert challenge == {
        "realm": token_registry.realm,
        "service": token_registry.service,
        "scope": "repository:busybox:pull",
    }
    realm = urlsplit(challenge["realm"])
    query = urlencode({"service": challenge["service"], "scope": challenge["scope"]})
    token_path = f"{realm.path}?{query}"
    assert _get(host, token_path)[0] == 401
    assert request(host, "GET", token_path, auth=(token_registry.username, "wrong")).status == 401
    resp = request(host, "GET", token_path, auth=token_registry.auth)
    assert resp.status == 200
    token = resp.json()
    assert token["token"] == token["access_token"] and token["expires_in"] == 300

    bearer = {"Authorization": f"Bearer {token['token']}", **accept}
    status, headers, body = _get(host, path, bearer)
    assert status == 200 and headers["docker-content-digest"] == token_registry.busybox.digest
    assert token_registry.busybox.ref == f"{host}/busybox:latest"
    status, _, layer = _get(
        host, f"/v2/busybox/blobs/{json.loads(body)['layers'][0]['digest']}", bearer
    )
    assert status == 200 and sha256_digest(layer) == token_registry.busybox.image.layers[0].digest
    assert _get(host, "/v2/other/manifests/latest", bearer)[0] == 401  # token is for busybox only

    form = urlencode(
        {
            "grant_type": "password",
            "username": token_registry.username,
            "password": token_registry.password,
            "service": token_registry.service,
            "scope": "repository:busybox:pull",
        }
    ).encode()
    resp = request(
        host, "POST", "/token", form, {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status == 200 and resp.json()["access_token"]

    seen = [(r.kind, r.status, r.auth_scheme) for r in proxy.requests]
    assert seen == [
        ("registry", 401, ""),
        ("token", 401, ""),
        ("token", 401, "basic"),
        ("token", 200, "basic"),
        ("registry", 200, "bearer"),
        ("registry", 200, "bearer"),
        ("registry", 401, "bearer"),
        ("token", 200, ""),
    ]
    proxy.expire_tokens()
    assert _get(host, path, bearer)[0] == 401


def test_corrupted_blob_is_served_corrupted(registry: Registry) -> None:
    layer = TarBuilder().file("corrupt-me", b"precious bytes\n" * 100).layer()
    pushed = push(registry.host, "harness-corrupt", "latest", build_image([layer]))
    digest = pushed.image.layers[0].digest
    path = registry.blob_data_path(digest)
    assert path.is_file() and sha256_digest(path.read_bytes()) == digest
    original = registry.corrupt_blob(digest)
    status, _, body = _get(registry.host, f"/v2/harness-corrupt/blobs/{digest}")
    assert status == 200 and len(body) == len(original)
    assert sha256_digest(body) != digest


def test_registry_stop_cleans_up() -> None:
    reg = Registry(username="u", password="p").start()
    tmp, port = reg.tmp_dir, reg.port
    assert request(reg.host, "GET", "/v2/", auth=("u", "p")).status == 200
    reg.stop()
    assert not tmp.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_bad_servers() -> None:
    with closed_port() as port, pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)

    with HangingServer() as silent:
        conn = http.client.HTTPConnection(silent.host, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.request("GET", "/v2/")
            conn.getresponse()
        assert time.monotonic() - started < 2
        conn.close()
        assert silent.connections == 1

    with HangingServer(mode="headers", content_length=1000, body_prefix=b"x" * 10) as stall:
        conn = http.client.HTTPConnection(stall.host, timeout=0.3)
        conn.request("GET", "/v2/busybox/blobs/sha256:00")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Length") == "1000"
        with pytest.raises(TimeoutError):
            resp.read()
        conn.close()
        assert stall.requests[0].startswith(b"GET /v2/busybox/blobs/sha256:00 HTTP/1.1")


def test_basic_header_helper(auth_registry: AuthRegistry) -> None:
    header = auth_registry.registry.auth_headers()["Authorization"]
    assert base64.b64decode(header.split()[1]).decode() == ":".join(auth_registry.auth)
