"""Parsing and validating image manifests and indexes (Docker schema 2 and OCI).

``parse()`` turns registry bytes into an ``ImageManifest`` (config + layers) or an
``ImageIndex`` (per-platform manifests); ``select()`` picks this host's entry
from an index. Malformed documents raise DataLoss(reason="BAD_MANIFEST");
formats peapod cannot run (schema 1, artifacts, unknown layer types) raise
Unimplemented(reason="UNSUPPORTED").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from base.errors import DataLoss, InvalidArgument, NotFound, Unimplemented
from oci.image.platform import Platform
from oci.image.reference import parse_digest

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
# What to send in Accept when fetching a manifest, preferred first.
ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
CONFIG_TYPES = (DOCKER_CONFIG, OCI_CONFIG)

# Layer media type -> compression.
LAYER_COMPRESSION = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
}

MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest says about a blob or another manifest."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageManifest:
    """A single-platform image: one config blob and ordered layers (base first)."""

    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageIndex:
    """A multi-platform image: one manifest descriptor per platform."""

    media_type: str
    manifests: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)


def _base_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _bad(what: str, why: str) -> DataLoss:
    return DataLoss(f"manifest of {what} is malformed: {why}", reason="BAD_MANIFEST")


def _schema1(what: str) -> Unimplemented:
    return Unimplemented(
        f"{what} uses the Docker image manifest schema 1, which peapod does not support; "
        "rebuild or re-push the image with a current tool (schema 2 or OCI)",
        reason="UNSUPPORTED",
    )


def detect_media_type(body: bytes, content_type: str | None = None) -> str:
    """The manifest media type: the document's ``mediaType``, else a known
    Content-Type, else a guess from the document's shape ("" if none)."""
    header = _base_type(content_type)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return header
    if not isinstance(doc, dict):
        return header
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    known = (*MANIFEST_TYPES, *INDEX_TYPES, DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)
    if header in known:
        return header
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    return header


def _str_map(value: Any, what: str, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _bad(what, f"{key} must be an object of strings")
    return dict(value)


def _platform(value: Any, what: str, key: str) -> Platform | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(what, f"{key}.platform must be an object")
    for name in ("os", "architecture"):
        if not isinstance(value.get(name), str):
            raise _bad(what, f"{key}.platform.{name} must be a string")
    if not isinstance(value.get("variant", ""), str):
        raise _bad(what, f"{key}.platform.variant must be a string")
    return Platform.from_json(value)


def parse_descriptor(value: Any, what: str, key: str) -> Descriptor:
    """Validate one descriptor object found at ``key`` in the manifest of ``what``."""
    if not isinstance(value, dict):
        raise _bad(what, f"{key} must be an object")
    media_type = value.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise _bad(what, f"{key}.mediaType must be a non-empty string")
    digest = value.get("digest")
    if not isinstance(digest, str):
        raise _bad(what, f"{key}.digest must be a string")
    try:
        parse_digest(digest)
    except InvalidArgument as err:
        raise _bad(what, f"{key}.digest: {err.message}") from None
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _bad(what, f"{key}.size must be a non-negative integer")
    urls = value.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise _bad(what, f"{key}.urls must be a list of strings")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        platform=_platform(value.get("platform"), what, key),
        annotations=_str_map(value.get("annotations"), what, f"{key}.annotations"),
        urls=tuple(urls),
    )


def compression(layer: Descriptor | str) -> str:
    """The compression of a layer ("gzip", "zstd" or "none"), by descriptor or media type."""
    media_type = layer if isinstance(layer, str) else layer.media_type
    try:
        return LAYER_COMPRESSION[media_type]
    except KeyError:
        raise Unimplemented(
            f"layer media type {media_type!r} is not supported; peapod unpacks tar, "
            "tar+gzip and tar+zstd layers",
            reason="UNSUPPORTED",
        ) from None


def parse(
    body: bytes, content_type: str | None = None, what: str = "the image"
) -> ImageManifest | ImageIndex:
    """Parse a manifest or index; ``what`` names the image in error messages."""
    if len(body) > MAX_MANIFEST_BYTES:
        raise _bad(what, f"it is {len(body)} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise _bad(what, f"not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise _bad(what, "the document is not a JSON object")
    media_type = detect_media_type(body, content_type)
    if media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED) or doc.get("schemaVersion") == 1:
        raise _schema1(what)
    if doc.get("schemaVersion") != 2:
        raise _bad(what, f"schemaVersion is {doc.get('schemaVersion')!r}, expected 2")
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _bad(what, "mediaType must be a string")
    annotations = _str_map(doc.get("annotations"), what, "annotations")
    if media_type in INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise _bad(what, "manifests must be a list")
        manifests = [
            parse_descriptor(entry, what, f"manifests[{i}]") for i, entry in enumerate(entries)
        ]
        return ImageIndex(media_type, manifests, annotations)
    if media_type in MANIFEST_TYPES:
        config = parse_descriptor(doc.get("config"), what, "config")
        if config.media_type not in CONFIG_TYPES:
            raise Unimplemented(
                f"{what} is not a container image: its config has media type "
                f"{config.media_type!r} (an OCI artifact such as a chart or signature?)",
                reason="UNSUPPORTED",
            )
        raw_layers = doc.get("layers")
        if not isinstance(raw_layers, list):
            raise _bad(what, "layers must be a list")
        layers = [parse_descriptor(lay, what, f"layers[{i}]") for i, lay in enumerate(raw_layers)]
        for layer in layers:
            compression(layer)
        return ImageManifest(media_type, config, layers, annotations)
    raise Unimplemented(
        f"{what} has manifest media type {media_type or 'unknown'!r}, which peapod does not "
        "support; expected an OCI or Docker schema 2 manifest or index",
        reason="UNSUPPORTED",
    )


def select(index: ImageIndex, platform: Platform, what: str = "the image") -> Descriptor:
    """The index entry that best fits ``platform``; NotFound listing what is offered."""
    best: tuple[int, int] | None = None
    chosen: Descriptor | None = None
    for position, entry in enumerate(index.manifests):
        if entry.media_type not in MANIFEST_TYPES:
            continue
        if entry.platform is None:
            rank: int | None = 100  # no platform given: usable, but any explicit match wins
        else:
            rank = platform.rank(entry.platform)
        if rank is None:
            continue
        key = (rank, position)
        if best is None or key < best:
            best, chosen = key, entry
    if chosen is None:
        offered = sorted(
            {str(e.platform) for e in index.manifests if e.platform is not None}
            - {"unknown/unknown"}
        )
        listing = ", ".join(offered) if offered else "no platforms"
        raise NotFound(
            f"{what} has no image for this host's platform {platform}; it offers: {listing}",
            reason="NOT_FOUND",
        )
    return chosen
