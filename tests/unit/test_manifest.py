"""Manifest/index parsing, layer compression, host platform and index platform selection."""

from __future__ import annotations

import json
from typing import Any

import pytest

from base.errors import DataLoss, NotFound, Unimplemented
from oci.image import manifest
from oci.image.manifest import ImageIndex, ImageManifest, compression, parse, select
from oci.image.platform import Platform, from_machine, host_platform, normalize

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
D4 = "sha256:" + "4" * 64
D5 = "sha256:" + "5" * 64


def image_doc(media_type: str | None = manifest.OCI_MANIFEST, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "config": {"mediaType": manifest.OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 5},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": D3, "size": 6},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": D4, "size": 7},
        ],
    }
    if media_type is not None:
        doc["mediaType"] = media_type
    doc.update(extra)
    return doc


def entry(digest: str, os: str, arch: str, variant: str | None = None) -> dict[str, Any]:
    platform = {"os": os, "architecture": arch}
    if variant is not None:
        platform["variant"] = variant
    return {"mediaType": manifest.OCI_MANIFEST, "digest": digest, "size": 100, "platform": platform}


def index_doc(*entries: dict[str, Any], media_type: str = manifest.OCI_INDEX) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": media_type, "manifests": list(entries)}
    ).encode()


def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


# ---- parsing ---------------------------------------------------------------------------------


def test_oci_manifest() -> None:
    got = parse(raw(image_doc(annotations={"a": "b"})))
    assert isinstance(got, ImageManifest)
    assert got.media_type == manifest.OCI_MANIFEST
    assert got.config.digest == D1 and got.config.size == 10
    assert [layer.digest for layer in got.layers] == [D2, D3, D4]
    assert [compression(layer) for layer in got.layers] == ["gzip", "zstd", "none"]
    assert got.annotations == {"a": "b"}


def test_docker_schema2_manifest_from_content_type() -> None:
    doc = image_doc(media_type=None)
    doc["config"]["mediaType"] = manifest.DOCKER_CONFIG
    doc["layers"] = [
        {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": D2, "size": 1}
    ]
    got = parse(raw(doc), "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8")
    assert isinstance(got, ImageManifest)
    assert got.media_type == manifest.DOCKER_MANIFEST
    assert compression(got.layers[0]) == "gzip"


def test_media_type_guessed_from_shape() -> None:
    assert parse(raw(image_doc(media_type=None)), "application/json").media_type == (
        manifest.OCI_MANIFEST
    )
    idx = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    assert isinstance(parse(idx, None), ImageIndex)


def test_index_and_manifest_list() -> None:
    body = index_doc(entry(D1, "linux", "amd64"), entry(D2, "linux", "arm64", "v8"))
    got = parse(body)
    assert isinstance(got, ImageIndex)
    assert [m.digest for m in got.manifests] == [D1, D2]
    assert got.manifests[1].platform == Platform("linux", "arm64", "v8")
    docker = parse(index_doc(entry(D1, "linux", "amd64"), media_type=manifest.DOCKER_MANIFEST_LIST))
    assert isinstance(docker, ImageIndex) and docker.media_type == manifest.DOCKER_MANIFEST_LIST


def test_nondistributable_and_foreign_layers() -> None:
    assert compression("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip") == "gzip"
    assert compression("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd") == "zstd"
    assert compression("application/vnd.oci.image.layer.nondistributable.v1.tar") == "none"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        raw(image_doc(schemaVersion=3)),
        raw(image_doc(config="x")),
        raw(image_doc(layers={"a": 1})),
        raw(image_doc(config={"mediaType": manifest.OCI_CONFIG, "digest": "sha256:12", "size": 1})),
        raw(image_doc(config={"mediaType": manifest.OCI_CONFIG, "digest": D1, "size": -1})),
        raw(image_doc(config={"mediaType": manifest.OCI_CONFIG, "digest": D1, "size": True})),
        raw(image_doc(config={"digest": D1, "size": 1})),
        raw(image_doc(annotations={"a": 1})),
        index_doc({"mediaType": manifest.OCI_MANIFEST, "digest": D1, "size": 1, "platform": 3}),
        index_doc(
            {
                "mediaType": manifest.OCI_MANIFEST,
                "digest": D1,
                "size": 1,
                "platform": {"os": "linux"},
            }
        ),
        b"{" + b" " * manifest.MAX_MANIFEST_BYTES + b"}",
    ],
)
def test_malformed_is_bad_manifest(body: bytes) -> None:
    with pytest.raises(DataLoss) as info:
        parse(body, what="quay.io/a/b:1")
    assert info.value.reason == "BAD_MANIFEST"
    assert "quay.io/a/b:1" in info.value.message


def test_schema1_unsupported() -> None:
    for body, ctype in [
        (raw({"schemaVersion": 1, "name": "x", "fsLayers": []}), None),
        (raw({"schemaVersion": 1}), manifest.DOCKER_SCHEMA1_SIGNED),
    ]:
        with pytest.raises(Unimplemented) as info:
            parse(body, ctype, what="docker.io/old/image:1")
        assert info.value.reason == "UNSUPPORTED"
        assert "schema 1" in info.value.message and "docker.io/old/image:1" in info.value.message


def test_unknown_layer_type_unsupported() -> None:
    doc = image_doc()
    doc["layers"][1]["mediaType"] = "application/vnd.example.layer.v1.tar+lz4"
    with pytest.raises(Unimplemented) as info:
        parse(raw(doc))
    assert info.value.reason == "UNSUPPORTED" and "tar+lz4" in info.value.message


def test_artifact_config_unsupported() -> None:
    doc = image_doc()
    doc["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json"
    with pytest.raises(Unimplemented, match="not a container image") as info:
        parse(raw(doc))
    assert info.value.reason == "UNSUPPORTED"


def test_unknown_manifest_type_unsupported() -> None:
    with pytest.raises(Unimplemented):
        parse(raw({"schemaVersion": 2, "mediaType": "application/x-other"}))


# ---- platforms -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "want"),
    [
        ("x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64/v8"),
        ("armv7l", "linux/arm/v7"),
        ("armv6l", "linux/arm/v6"),
        ("i686", "linux/386"),
        ("ppc64le", "linux/ppc64le"),
        ("s390x", "linux/s390x"),
        ("riscv64", "linux/riscv64"),
    ],
)
def test_from_machine(machine: str, want: str) -> None:
    assert str(from_machine(machine)) == want


def test_host_platform_is_linux() -> None:
    host = host_platform()
    assert host.os == "linux" and host.architecture


def test_normalize() -> None:
    assert normalize("Linux", "aarch64") == Platform("linux", "arm64", "v8")
    assert normalize("linux", "arm64", "8") == Platform("linux", "arm64", "v8")
    assert normalize("linux", "arm", "7") == Platform("linux", "arm", "v7")
    assert normalize("linux", "amd64", "v1") == Platform("linux", "amd64", "")
    assert normalize("linux", "arm") == Platform("linux", "arm", "")


def test_platform_matching() -> None:
    arm64 = from_machine("aarch64")
    assert arm64.matches(Platform("linux", "arm64"))
    assert arm64.matches(Platform("linux", "arm64", "v8"))
    assert not arm64.matches(Platform("linux", "amd64"))
    assert not arm64.matches(Platform("windows", "arm64"))
    arm7 = from_machine("armv7l")
    assert [arm7.rank(Platform("linux", "arm", v)) for v in ("v7", "v6", "v5", "")] == [0, 1, 2, 3]
    assert not arm7.matches(Platform("linux", "arm", "v8"))
    assert not from_machine("armv6l").matches(Platform("linux", "arm", "v7"))
    amd64 = from_machine("x86_64")
    assert amd64.matches(Platform("linux", "amd64"))
    assert not amd64.matches(Platform("linux", "amd64", "v3"))


# ---- selection -------------------------------------------------------------------------------


def test_select_picks_host_platform() -> None:
    idx = parse(
        index_doc(
            entry(D1, "linux", "arm", "v6"),
            entry(D2, "linux", "amd64"),
            entry(D3, "linux", "arm", "v7"),
            entry(D4, "linux", "arm64", "v8"),
            entry(D5, "unknown", "unknown"),
        )
    )
    assert isinstance(idx, ImageIndex)
    assert select(idx, from_machine("x86_64")).digest == D2
    assert select(idx, from_machine("armv7l")).digest == D3
    assert select(idx, from_machine("armv6l")).digest == D1
    assert select(idx, from_machine("aarch64")).digest == D4


def test_select_prefers_explicit_variant_and_first_of_equals() -> None:
    idx = parse(
        index_doc(
            entry(D1, "linux", "arm"),
            entry(D2, "linux", "arm", "v6"),
            entry(D3, "linux", "arm", "v6"),
        )
    )
    assert isinstance(idx, ImageIndex)
    assert select(idx, from_machine("armv7l")).digest == D2


def test_select_entry_without_platform_is_last_resort() -> None:
    plain = {"mediaType": manifest.OCI_MANIFEST, "digest": D1, "size": 1}
    idx = parse(index_doc(plain, entry(D2, "linux", "amd64")))
    assert isinstance(idx, ImageIndex)
    assert select(idx, from_machine("x86_64")).digest == D2
    assert select(idx, from_machine("s390x")).digest == D1


def test_select_skips_nested_indexes() -> None:
    nested = entry(D1, "linux", "amd64")
    nested["mediaType"] = manifest.OCI_INDEX
    idx = parse(index_doc(nested, entry(D2, "linux", "amd64")))
    assert isinstance(idx, ImageIndex)
    assert select(idx, from_machine("x86_64")).digest == D2


def test_select_none_lists_offered_platforms() -> None:
    idx = parse(
        index_doc(
            entry(D1, "linux", "arm64", "v8"),
            entry(D2, "linux", "s390x"),
            entry(D3, "unknown", "unknown"),
        )
    )
    assert isinstance(idx, ImageIndex)
    with pytest.raises(NotFound) as info:
        select(idx, from_machine("x86_64"), what="quay.io/a/b:1")
    msg = info.value.message
    assert info.value.reason == "NOT_FOUND"
    assert "quay.io/a/b:1" in msg and "linux/amd64" in msg
    assert "linux/arm64/v8" in msg and "linux/s390x" in msg and "unknown" not in msg
