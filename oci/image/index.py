"""The image store's in-memory index: image records, names, layers, holds and blobs.

``Index`` is an immutable snapshot that the store's writers replace after each
commit, so readers take no lock. ``load_index`` builds the first one at start-up
from the database and the files, removing what a crash left half-done.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.db import Database
from base.errors import InvalidArgument
from oci.image.files import remove_path

log = logging.getLogger("peapod.images")

HEX_LEN = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class ImageRecord:
    """One image as the store knows it. Treat ``config`` as read-only: it is shared."""

    id: str  # sha256:<hex> of the config blob
    manifest_digest: str
    manifest_media_type: str
    config: dict[str, Any]
    size: int
    created_at: int  # unix nanoseconds, when first stored
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    layers: tuple[str, ...]  # diff_ids, bottom layer first
    pinned: bool


@dataclass(frozen=True)
class LayerRow:
    """A layer's row: the sizes recorded when it was unpacked."""

    size: int
    inodes: int


@dataclass(frozen=True)
class Index:
    """An immutable snapshot of the store; replaced, never changed."""

    images: dict[str, ImageRecord]
    names: dict[str, str]  # name -> image id
    ids: list[str]  # sorted hex of every image id, for prefix lookups
    layers: dict[str, LayerRow]
    holds: dict[str, frozenset[str]]  # holder -> diff_ids
    blobs: dict[str, int]  # digest -> bytes



def load_index(
    db: Database,
    layers_dir: Path,
    blobs_dir: Path,
    tmp_dir: Path,
    write_blob: Callable[[Path, bytes], None],
) -> Index:
    """Load the index from the database and remove whatever a crash left behind.

    Emptied: ``tmp_dir``. Removed: layer dirs and blobs no row or image references,
    images whose layers are lost on disk, and rows of unused layers. A config blob
    lost on disk is written again from its row with ``write_blob``.
    """
    for entry in os.scandir(tmp_dir):
        remove_path(Path(entry.path))
    q = db.query
    layer_rows = {
        r["diff_id"]: LayerRow(r["size"], r["inodes"]) for r in q("SELECT * FROM layers")
    }
    image_layers: dict[str, list[str]] = {}
    for r in q("SELECT image_id, diff_id FROM image_layers ORDER BY image_id, position"):
        image_layers.setdefault(r["image_id"], []).append(r["diff_id"])
    holds: dict[str, set[str]] = {}
    for r in q("SELECT holder, diff_id FROM layer_holds"):
        holds.setdefault(r["holder"], set()).add(r["diff_id"])

    on_disk = {e.name for e in os.scandir(layers_dir)}
    for name in on_disk:
        if (
            "sha256:" + name not in layer_rows
            or not (layers_dir / name / "diff").is_dir()
        ):
            log.warning("removing a layer dir the database does not know", extra={"dir": name})
            remove_path(layers_dir / name)
    present = {d for d in layer_rows if _layer_dir(layers_dir, d).is_dir()}
    broken_layers = set(layer_rows) - present
    broken_images = {i for i, ds in image_layers.items() if broken_layers.intersection(ds)}
    referenced = {d for i, ds in image_layers.items() if i not in broken_images for d in ds}
    referenced.update(d for ds in holds.values() for d in ds)
    unused = present - referenced
    for image_id in broken_images:
        log.error(
            "image lost layers on disk; removing it so it can be pulled again",
            extra={"image": image_id},
        )
    for diff_id in broken_layers & referenced:
        log.error("a held layer is missing on disk", extra={"diff_id": diff_id})
    drop = (broken_layers - referenced) | unused
    if broken_images or drop:
        with db.transaction() as tx:
            tx.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in broken_images])
            tx.executemany("DELETE FROM layers WHERE diff_id = ?", [(d,) for d in drop])
    for diff_id in unused:
        remove_path(_layer_dir(layers_dir, diff_id).parent)
        del layer_rows[diff_id]
    for diff_id in broken_layers - referenced:
        del layer_rows[diff_id]

    images: dict[str, ImageRecord] = {}
    for r in q("SELECT * FROM images ORDER BY created_at"):
        images[r["id"]] = ImageRecord(
            id=r["id"],
            manifest_digest=r["manifest_digest"],
            manifest_media_type=r["manifest_media_type"],
            config=json.loads(r["config_json"]),
            size=r["size"],
            created_at=r["created_at"],
            repo_tags=(),
            repo_digests=(),
            layers=tuple(image_layers.get(r["id"], ())),
            pinned=bool(r["pinned"]),
        )
    names: dict[str, str] = {}
    for r in q("SELECT name, image_id FROM image_names ORDER BY rowid"):
        names[r["name"]] = r["image_id"]
        images[r["image_id"]] = with_name(images[r["image_id"]], r["name"])

    wanted_blobs: set[str] = set()
    for record in images.values():
        wanted_blobs |= image_blobs(record)
    blobs: dict[str, int] = {}
    for algo_dir in os.scandir(blobs_dir):
        if algo_dir.name not in HEX_LEN or not algo_dir.is_dir(follow_symlinks=False):
            remove_path(Path(algo_dir.path))
            continue
        for entry in os.scandir(algo_dir.path):
            digest = f"{algo_dir.name}:{entry.name}"
            if digest in wanted_blobs and entry.is_file(follow_symlinks=False):
                blobs[digest] = entry.stat().st_size
            else:
                remove_path(Path(entry.path))
    for image_id in images:
        if image_id not in blobs:  # the config is in the database too
            row = q("SELECT config_json FROM images WHERE id = ?", (image_id,))
            data = row[0]["config_json"].encode()
            write_blob(_blob_path(blobs_dir, image_id), data)
            blobs[image_id] = len(data)
    return Index(
        images=images,
        names=names,
        ids=sorted_ids(images),
        layers={d: layer_rows[d] for d in present if d in layer_rows},
        holds={h: frozenset(ds) for h, ds in holds.items()},
        blobs=blobs,
    )


def _layer_dir(layers_dir: Path, diff_id: str) -> Path:
    return layers_dir / split_digest(diff_id)[1] / "diff"


def _blob_path(blobs_dir: Path, digest: str) -> Path:
    algo, hexpart = split_digest(digest)
    return blobs_dir / algo / hexpart


def split_digest(digest: str) -> tuple[str, str]:
    algo, _, hexpart = digest.partition(":")
    want = HEX_LEN.get(algo)
    if want is None or len(hexpart) != want or not _HEX.fullmatch(hexpart):
        raise InvalidArgument(f"{digest!r} is not a digest of the form sha256:<64 hex digits>")
    return algo, hexpart


def name_kind(name: str) -> str:
    if not name or any(c.isspace() for c in name):
        raise InvalidArgument(f"image name {name!r} is empty or contains spaces")
    repo, at, digest = name.partition("@")
    if at:
        split_digest(digest)
        return "digest"
    if ":" not in repo.rsplit("/", 1)[-1]:
        raise InvalidArgument(f"image name {name!r} has neither a tag nor a digest")
    return "tag"


def with_name(record: ImageRecord, name: str) -> ImageRecord:
    if "@" in name:
        if name in record.repo_digests:
            return record
        return dataclasses.replace(record, repo_digests=(*record.repo_digests, name))
    if name in record.repo_tags:
        return record
    return dataclasses.replace(record, repo_tags=(*record.repo_tags, name))


def without_name(record: ImageRecord, name: str) -> ImageRecord:
    return dataclasses.replace(
        record,
        repo_tags=tuple(n for n in record.repo_tags if n != name),
        repo_digests=tuple(n for n in record.repo_digests if n != name),
    )


def image_blobs(record: ImageRecord) -> set[str]:
    """The blobs an image keeps: its config, its manifest, and those its digest names name."""
    blobs = {record.id, record.manifest_digest}
    blobs.update(name.partition("@")[2] for name in record.repo_digests)
    return blobs


def sorted_ids(images: dict[str, ImageRecord]) -> list[str]:
    return sorted(image_id.partition(":")[2] for image_id in images)
