"""The local image store: content-addressed blobs, unpacked layers and image records.

On disk, under ``root``::

    blobs/<algo>/<hex>      manifests and configs (layer blobs are not kept)
    layers/<hex>/diff       an unpacked layer, usable directly as an overlay lowerdir
    tmp/                    downloads and unpacks in progress; emptied at start-up

Every object is built in ``tmp/`` and renamed into place, then its database row is
committed; at start-up whatever the database does not reference is removed, so a
crash leaves either nothing or a complete object.

Reads (``resolve``, ``list``, ``get``, ``has_layer``, ``fs_usage``...) use an immutable
in-memory snapshot that writers replace after each commit: they take no lock and
never touch SQLite.

Layers stay while an image, a lease (a pull in progress) or a hold (a container,
persisted in ``layer_holds``) references them; when the last reference goes they are
collected.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from base.cancel import CallContext
from base.db import Database
from base.errors import (
    DataLoss,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
)
from oci.image.files import fsync_dir, rmtrees, syncfs, write_error
from oci.image.index import (
    ImageRecord,
    Index,
    LayerRow,
    image_blobs,
    load_index,
    name_kind,
    sorted_ids,
    split_digest,
    with_name,
    without_name,
)
from oci.image.unpack import Compression, unpack_layer

log = logging.getLogger("peapod.images")

_HEX = re.compile(r"[0-9a-f]+")
_MIN_PREFIX = 3


@dataclass(frozen=True)
class LayerInfo:
    """The outcome of ``ensure_layer``."""

    diff_id: str
    size: int
    inodes: int
    reused: bool  # the layer was already in the store


@dataclass(frozen=True)
class FsUsage:
    """Space the store uses, from the sizes recorded when objects were added."""

    path: Path
    used_bytes: int
    inodes_used: int


class Lease:
    """Keeps the layers and blobs recorded under it from collection until it ends.

    Use it as a context manager around a pull: ``with store.lease() as lease: ...``.
    When it ends, whatever it kept that no image references is collected.
    """

    def __init__(self, store: ImageStore) -> None:
        self._store = store
        self.layers: set[str] = set()
        self.blobs: set[str] = set()
        self.closed = False

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the lease (idempotent)."""
        self._store._end_lease(self)

    def _check_open(self) -> None:
        if self.closed:
            raise FailedPrecondition(
                "the image store lease has already ended", reason="LEASE_ENDED"
            )


class _Unpack:
    """An unpack in progress that other callers for the same layer wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()


class ImageStore:
    """Blobs, unpacked layers and image records under ``root``, indexed in memory."""

    def __init__(self, root: Path, db: Database, sync: bool = True) -> None:
        self.root = root
        self._db = db
        self._sync = sync  # flush a layer to disk before it becomes visible
        self._blobs_dir = root / "blobs"
        self._layers_dir = root / "layers"
        self._tmp = root / "tmp"
        self._lock = threading.RLock()
        self._leases: set[Lease] = set()
        self._unpacking: dict[str, _Unpack] = {}
        for d in (self._blobs_dir / "sha256", self._layers_dir, self._tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._index = load_index(
            db, self._layers_dir, self._blobs_dir, self._tmp, self._write_blob_file
        )

    # ------------------------------------------------------------ paths and blobs
    def tmp_path(self, hint: str) -> Path:
        """A fresh path under tmp/ (same filesystem as the store); nothing is created."""
        clean = re.sub(r"[^A-Za-z0-9._-]", "_", hint)[:40] or "tmp"
        return self._tmp / f"{clean}-{secrets.token_hex(8)}"

    def blob_path(self, digest: str) -> Path:
        algo, hexpart = split_digest(digest)
        return self._blobs_dir / algo / hexpart

    def has_blob(self, digest: str) -> bool:
        return digest in self._index.blobs

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the image store") from None

    def put_blob(self, digest: str, data: bytes, lease: Lease | None = None) -> None:
        """Store ``data`` under ``digest`` after checking it; already present is fine.

        Without a lease, a concurrent ``remove`` of an image that used the same blob
        may collect it again; pulls should pass their lease.
        """
        algo, hexpart = split_digest(digest)
        if hashlib.new(algo, data).hexdigest() != hexpart:
            raise DataLoss(
                f"blob content does not match its digest {digest}", reason="DIGEST_MISMATCH"
            )
        with self._lock:
            if lease is not None:
                lease._check_open()
                lease.blobs.add(digest)
            if digest in self._index.blobs:
                return
            (self._blobs_dir / algo).mkdir(exist_ok=True)
            self._write_blob_file(self._blobs_dir / algo / hexpart, data)
            self._publish_blob(digest, len(data))

    def _publish_blob(self, digest: str, size: int) -> None:
        idx = self._index
        self._index = dataclasses.replace(idx, blobs={**idx.blobs, digest: size})

    def _write_blob_file(self, path: Path, data: bytes) -> None:
        tmp = self.tmp_path("blob")
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise write_error(exc, path) from None
            raise
        fsync_dir(path.parent)

    # ------------------------------------------------------------ layers
    def lease(self) -> Lease:
        """A new lease; end it (or leave its ``with`` block) when the pull is over."""
        lease = Lease(self)
        with self._lock:
            self._leases.add(lease)
        return lease

    def has_layer(self, diff_id: str) -> bool:
        return diff_id in self._index.layers

    def layer_dir(self, diff_id: str) -> Path:
        """Where the layer's files are (whether or not it is present)."""
        algo, hexpart = split_digest(diff_id)
        if algo != "sha256":
            raise InvalidArgument(f"layer diff_id {diff_id!r} must be a sha256 digest")
        return self._layers_dir / hexpart / "diff"

    def keep_layer(self, diff_id: str, lease: Lease) -> bool:
        """Put a present layer under ``lease``; False if the layer is not (or no longer) here."""
        with self._lock:
            lease._check_open()
            if diff_id not in self._index.layers:
                return False
            lease.layers.add(diff_id)
            return True

    def ensure_layer(
        self,
        diff_id: str | None,
        blob: Path,
        compression: Compression,
        lease: Lease,
        ctx: CallContext,
    ) -> LayerInfo:
        """Make the layer present, unpacking ``blob`` unless it already is; keep it under ``lease``.

        Concurrent calls for one diff_id unpack once: the others wait and reuse it.
        With ``diff_id`` None the blob is unpacked first and its diff_id computed.
        """
        if diff_id is not None:
            self.layer_dir(diff_id)  # validates
        mine: _Unpack | None = None
        while diff_id is not None:
            with self._lock:
                lease._check_open()
                layer = self._index.layers.get(diff_id)
                if layer is not None:
                    lease.layers.add(diff_id)
                    return LayerInfo(diff_id, layer.size, layer.inodes, reused=True)
                other = self._unpacking.get(diff_id)
                if other is None:
                    mine = self._unpacking[diff_id] = _Unpack()
                    break
            while not other.done.is_set():  # someone else unpacks it; then look again
                other.done.wait(ctx.timeout(0.25))
        try:
            return self._unpack(diff_id, blob, compression, lease, ctx)
        finally:
            if mine is not None:
                with self._lock:
                    del self._unpacking[diff_id]  # type: ignore[arg-type]
                mine.done.set()

    def _unpack(
        self,
        diff_id: str | None,
        blob: Path,
        compression: Compression,
        lease: Lease,
        ctx: CallContext,
    ) -> LayerInfo:
        work = self.tmp_path("layer")
        work.mkdir()
        try:
            started = time.monotonic()
            result = unpack_layer(blob, compression, work / "diff", ctx, diff_id)
            if self._sync:
                syncfs(work)
            with self._lock:
                lease._check_open()
                lease.layers.add(result.diff_id)
                known = self._index.layers.get(result.diff_id)
                if known is not None:  # only when the caller did not know the diff_id
                    return LayerInfo(result.diff_id, known.size, known.inodes, reused=True)
                final = self.layer_dir(result.diff_id).parent
                try:
                    os.rename(work, final)
                except OSError as exc:
                    raise Internal(
                        f"cannot move unpacked layer {result.diff_id} into place: {exc}",
                        reason="LAYER_STORE_BROKEN",
                    ) from None
                fsync_dir(self._layers_dir)
                try:
                    with self._db.transaction() as tx:
                        # A row may remain for a layer lost on disk that a hold still names.
                        tx.execute(
                            "INSERT INTO layers (diff_id, size, inodes, created_at) "
                            "VALUES (?, ?, ?, ?) ON CONFLICT (diff_id) DO UPDATE SET "
                            "size = excluded.size, inodes = excluded.inodes",
                            (result.diff_id, result.size, result.inodes, time.time_ns()),
                        )
                except BaseException:
                    os.rename(final, work)
                    raise
                idx = self._index
                layers = dict(idx.layers)
                layers[result.diff_id] = LayerRow(result.size, result.inodes)
                self._index = dataclasses.replace(idx, layers=layers)
            log.info(
                "layer unpacked",
                extra={
                    "diff_id": result.diff_id,
                    "bytes": result.size,
                    "inodes": result.inodes,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
            return LayerInfo(result.diff_id, result.size, result.inodes, reused=False)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # ------------------------------------------------------------ images
    def add_image(
        self,
        image_id: str,
        manifest_digest: str,
        manifest_media_type: str,
        config_json: bytes,
        size: int,
        layers: list[tuple[str, str]],
        names: list[str],
        lease: Lease | None = None,
        pinned: bool = False,
    ) -> ImageRecord:
        """Record an image whose layers are present, with ``names``, in one transaction.

        ``layers`` is (diff_id, blob digest) bottom first. An image already present
        just gains the names (and the pin). A name that pointed at another image
        moves here; that image stays, with whatever names it has left.
        """
        algo, hexpart = split_digest(image_id)
        if algo != "sha256" or hashlib.sha256(config_json).hexdigest() != hexpart:
            raise DataLoss(
                f"image config does not match the image ID {image_id}", reason="DIGEST_MISMATCH"
            )
        config_text = ""
        try:
            config_text = config_json.decode("utf-8")
            config = json.loads(config_text)
        except ValueError:  # includes UnicodeDecodeError
            config = None
        if not isinstance(config, dict):
            raise InvalidArgument(f"the config of image {image_id} is not a JSON object")
        split_digest(manifest_digest)
        kinds = {name: name_kind(name) for name in names}
        for diff_id, blob_digest in layers:
            self.layer_dir(diff_id)
            split_digest(blob_digest)
        with self._lock:
            if lease is not None:
                lease._check_open()
            idx = self._index
            missing = [d for d, _ in layers if d not in idx.layers]
            if missing:
                raise FailedPrecondition(
                    f"cannot record image {image_id}: layers {', '.join(missing)} are not in "
                    "the store (unpack them under a lease first)",
                    reason="LAYER_MISSING",
                )
            if image_id not in idx.blobs:
                self._write_blob_file(self._blobs_dir / "sha256" / hexpart, config_json)
                self._publish_blob(image_id, len(config_json))
                idx = self._index
            existing = idx.images.get(image_id)
            now = time.time_ns()
            with self._db.transaction() as tx:
                if existing is None:
                    tx.execute(
                        "INSERT INTO images (id, manifest_digest, manifest_media_type, "
                        "config_json, size, created_at, pinned) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            image_id,
                            manifest_digest,
                            manifest_media_type,
                            config_text,
                            size,
                            now,
                            int(pinned),
                        ),
                    )
                    tx.executemany(
                        "INSERT INTO image_layers (image_id, position, diff_id, blob_digest) "
                        "VALUES (?, ?, ?, ?)",
                        [(image_id, i, d, b) for i, (d, b) in enumerate(layers)],
                    )
                elif pinned and not existing.pinned:
                    tx.execute("UPDATE images SET pinned = 1 WHERE id = ?", (image_id,))
                for name, kind in kinds.items():
                    if idx.names.get(name) != image_id:
                        tx.execute(
                            "INSERT OR REPLACE INTO image_names (name, image_id, kind) "
                            "VALUES (?, ?, ?)",
                            (name, image_id, kind),
                        )
            images = dict(idx.images)
            if existing is None:
                existing = ImageRecord(
                    id=image_id,
                    manifest_digest=manifest_digest,
                    manifest_media_type=manifest_media_type,
                    config=config,
                    size=size,
                    created_at=now,
                    repo_tags=(),
                    repo_digests=(),
                    layers=tuple(d for d, _ in layers),
                    pinned=pinned,
                )
            elif pinned:
                existing = dataclasses.replace(existing, pinned=True)
            images[image_id] = existing
            name_map = dict(idx.names)
            for name in kinds:
                old = name_map.get(name)
                if old == image_id:
                    continue
                if old is not None:
                    images[old] = without_name(images[old], name)
                images[image_id] = with_name(images[image_id], name)
                name_map[name] = image_id
            self._index = dataclasses.replace(
                idx, images=images, names=name_map, ids=sorted_ids(images)
            )
            return images[image_id]

    def set_pinned(self, image_id: str, pinned: bool) -> None:
        """Mark an image pinned (the kubelet never garbage-collects it) or not."""
        with self._lock:
            idx = self._index
            record = idx.images.get(image_id)
            if record is None:
                raise NotFound(f"image {image_id} is not in the store")
            with self._db.transaction() as tx:
                tx.execute("UPDATE images SET pinned = ? WHERE id = ?", (int(pinned), image_id))
            images = dict(idx.images)
            images[image_id] = dataclasses.replace(record, pinned=pinned)
            self._index = dataclasses.replace(idx, images=images)

    def resolve(self, ref: str) -> ImageRecord | None:
        """The image ``ref`` names: an exact name, a full or bare ID, or an ID prefix.

        Names must be full (``repo:tag``, ``repo@sha256:...``); the caller normalises.
        An ID prefix needs at least 3 hex digits; one matching several images is an
        InvalidArgument naming them.
        """
        idx = self._index
        image_id = idx.names.get(ref)
        if image_id is not None:
            return idx.images[image_id]
        hexpart = ref[7:] if ref.startswith("sha256:") else ref
        if len(hexpart) < _MIN_PREFIX or len(hexpart) > 64 or not _HEX.fullmatch(hexpart):
            return None
        if len(hexpart) == 64:
            return idx.images.get("sha256:" + hexpart)
        start = bisect.bisect_left(idx.ids, hexpart)
        matches: list[str] = []
        for candidate in idx.ids[start:]:
            if not candidate.startswith(hexpart):
                break
            matches.append(candidate)
        if not matches:
            return None
        if len(matches) > 1:
            shown = ", ".join(m[:12] for m in matches[:5])
            raise InvalidArgument(
                f"image ID prefix {ref!r} is ambiguous: it matches {len(matches)} images "
                f"({shown}); give more digits",
                reason="AMBIGUOUS_IMAGE_ID",
            )
        return idx.images["sha256:" + matches[0]]

    def get(self, image_id: str) -> ImageRecord | None:
        return self._index.images.get(image_id)

    def list(self) -> list[ImageRecord]:
        return list(self._index.images.values())

    def lower_dirs(self, image_id: str) -> list[Path]:
        """The image's layer dirs for an overlay ``lowerdir``, top layer first, no repeats."""
        record = self._index.images.get(image_id)
        if record is None:
            raise NotFound(f"image {image_id} is not in the store")
        return self._lower_dirs(record)

    def _lower_dirs(self, record: ImageRecord) -> list[Path]:
        # overlayfs refuses a dir twice; the topmost copy alone has the same effect.
        return [self.layer_dir(d) for d in dict.fromkeys(reversed(record.layers))]

    def fs_usage(self) -> FsUsage:
        idx = self._index
        return FsUsage(
            path=self.root,
            used_bytes=sum(v.size for v in idx.layers.values()) + sum(idx.blobs.values()),
            inodes_used=sum(v.inodes for v in idx.layers.values()) + len(idx.blobs),
        )

    def remove(self, image_id: str) -> None:
        """Remove the image and all its names, then collect what nothing else uses.

        Absent is fine. Layers still used by another image, a lease or a hold stay.
        """
        with self._lock:
            idx = self._index
            record = idx.images.get(image_id)
            if record is None:
                return
            images = dict(idx.images)
            del images[image_id]
            names = {n: i for n, i in idx.names.items() if i != image_id}
            after = dataclasses.replace(idx, images=images, names=names, ids=sorted_ids(images))
            layers, blobs = self._unused(after, set(record.layers), image_blobs(record))
            with self._db.transaction() as tx:
                tx.execute("DELETE FROM images WHERE id = ?", (image_id,))
                tx.executemany("DELETE FROM layers WHERE diff_id = ?", [(d,) for d in layers])
            trash = self._drop(after, layers, blobs)
        rmtrees(trash)  # before answering: the kubelet's image GC measures the space freed
        log.info("image removed", extra={"image": image_id, "layers_collected": len(layers)})

    # ------------------------------------------------------------ holds
    def hold(self, holder: str, image_id: str) -> list[Path]:
        """Keep the image's layers for ``holder`` (e.g. a container ID) until ``release``.

        Persisted: holds survive restarts, and removing the image keeps held layers.
        Returns the layer dirs, top first, for the overlay ``lowerdir``.
        """
        with self._lock:
            idx = self._index
            record = idx.images.get(image_id)
            if record is None:
                raise NotFound(f"image {image_id} is not in the store")
            held = idx.holds.get(holder, frozenset())
            new = [d for d in dict.fromkeys(record.layers) if d not in held]
            if new:
                with self._db.transaction() as tx:
                    tx.executemany(
                        "INSERT INTO layer_holds (holder, diff_id) VALUES (?, ?)",
                        [(holder, d) for d in new],
                    )
                holds = dict(idx.holds)
                holds[holder] = held | set(new)
                self._index = dataclasses.replace(idx, holds=holds)
            return self._lower_dirs(record)

    def release(self, holder: str) -> None:
        """Drop every hold of ``holder`` and collect layers nothing else uses; idempotent."""
        with self._lock:
            idx = self._index
            held = idx.holds.get(holder)
            if held is None:
                return
            holds = dict(idx.holds)
            del holds[holder]
            after = dataclasses.replace(idx, holds=holds)
            layers, _ = self._unused(after, set(held), set())
            with self._db.transaction() as tx:
                tx.execute("DELETE FROM layer_holds WHERE holder = ?", (holder,))
                tx.executemany("DELETE FROM layers WHERE diff_id = ?", [(d,) for d in layers])
            trash = self._drop(after, layers, set())
        rmtrees(trash)

    # ------------------------------------------------------------ collection
    def _end_lease(self, lease: Lease) -> None:
        with self._lock:
            if lease.closed:
                return
            lease.closed = True
            self._leases.discard(lease)
            idx = self._index
            layers, blobs = self._unused(idx, lease.layers, lease.blobs)
            if layers:
                with self._db.transaction() as tx:
                    tx.executemany("DELETE FROM layers WHERE diff_id = ?", [(d,) for d in layers])
            trash = self._drop(idx, layers, blobs)
        rmtrees(trash)

    def _unused(self, idx: Index, layers: set[str], blobs: set[str]) -> tuple[set[str], set[str]]:
        """Which of ``layers`` and ``blobs`` no image, lease or hold in ``idx`` references."""
        used_layers: set[str] = set()
        used_blobs: set[str] = set()
        for record in idx.images.values():
            used_layers.update(record.layers)
            used_blobs |= image_blobs(record)
        for held in idx.holds.values():
            used_layers |= held
        for lease in self._leases:
            used_layers |= lease.layers
            used_blobs |= lease.blobs
        return (
            {d for d in layers if d in idx.layers and d not in used_layers},
            {b for b in blobs if b in idx.blobs and b not in used_blobs},
        )

    def _drop(self, idx: Index, layers: set[str], blobs: set[str]) -> list[Path]:
        """Publish ``idx`` without ``layers``; move their dirs to tmp/ and delete ``blobs``.

        Called with the lock held after the rows are gone; returns dirs to delete
        once the lock is released (a rename is quick, deleting a tree is not).
        """
        trash: list[Path] = []
        if layers:
            kept = {d: v for d, v in idx.layers.items() if d not in layers}
            idx = dataclasses.replace(idx, layers=kept)
        if blobs:
            idx = dataclasses.replace(
                idx, blobs={b: n for b, n in idx.blobs.items() if b not in blobs}
            )
        self._index = idx
        for diff_id in layers:
            target = self.tmp_path("gc")
            try:
                os.rename(self.layer_dir(diff_id).parent, target)
                trash.append(target)
            except FileNotFoundError:
                log.warning("layer dir already gone", extra={"diff_id": diff_id})
        for digest in blobs:
            self.blob_path(digest).unlink(missing_ok=True)
        return trash

# ---------------------------------------------------------------- helpers


__all__ = ["FsUsage", "ImageRecord", "ImageStore", "LayerInfo", "Lease"]
