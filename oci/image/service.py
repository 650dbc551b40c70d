"""The image service: pull from registries into the store, look images up, remove them.

A pull resolves the name through registries.conf (short names, mirrors,
blocked and insecure registries), fetches the manifest (choosing this host's
platform from an index), the config and every layer it does not already have,
verifies each against its digest, unpacks layers once, and records the image
with its tag and repo digest. Identical concurrent pulls share one download.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from base.cancel import CallContext
from base.errors import (
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PeapodError,
)
from oci.image import manifest as manifests
from oci.image import registries_conf
from oci.image.distribution import RegistryClient
from oci.image.platform import Platform, host_platform
from oci.image.reference import Reference
from oci.image.registry_auth import Credentials
from oci.image.singleflight import SingleFlight
from oci.image.store import FsUsage, ImageRecord, ImageStore, Lease

log = logging.getLogger("peapod.images")


class PullObserver(Protocol):
    """Receives pull events (the daemon turns them into metrics)."""

    def bytes_downloaded(self, count: int) -> None: ...
    def layer_reused(self) -> None: ...
    def layer_downloaded(self, size: int) -> None: ...
    def pull_finished(self, result: str) -> None: ...

    def pull_succeeded(self, seconds: float, image_size: int) -> None:
        """A pull returned an image of ``image_size`` bytes after ``seconds``."""


@dataclass(frozen=True)
class PullSettings:
    registries_conf: Path | None
    registries_conf_dir: Path | None
    default_search: tuple[str, ...]
    certs_dir: Path | None
    max_parallel_downloads: int
    registry_timeout: float


class ImageService:
    """Pulls, lists, resolves and removes images."""

    def __init__(
        self,
        store: ImageStore,
        settings: PullSettings,
        observer: PullObserver,
        platform: Platform | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.observer = observer
        self.platform = platform or host_platform()
        self._flights: SingleFlight[ImageRecord] = SingleFlight()
        self._conf_lock = threading.Lock()
        self._conf_key: tuple[Any, ...] | None = None
        self._conf: registries_conf.RegistriesConf | None = None
        # Who uses an image: image ID -> container IDs (set by the daemon).
        self.users: Callable[[str], list[str]] | None = None

    def close(self) -> None:
        """Nothing to release yet; kept for symmetry with the daemon's shutdown."""

    # ------------------------------------------------------------ registries.conf
    def registries(self) -> registries_conf.RegistriesConf:
        """registries.conf as it is on disk now (re-read when a file changes)."""
        s = self.settings
        key = (_stat_key(s.registries_conf), _dir_key(s.registries_conf_dir))
        with self._conf_lock:
            if self._conf is None or key != self._conf_key:
                try:
                    self._conf = registries_conf.load(
                        s.registries_conf, s.registries_conf_dir, list(s.default_search)
                    )
                except InvalidArgument as exc:
                    # The node's configuration is broken, not the caller's request.
                    raise FailedPrecondition(
                        f"{exc.message}; fix it (pulls and short-name lookups fail until then)",
                        reason="REGISTRIES_CONF",
                    ) from None
                self._conf_key = key
            return self._conf

    # ------------------------------------------------------------ queries
    def status(self, ref: str) -> ImageRecord | None:
        """The image ``ref`` names (ID, ID prefix, tag or digest reference), or None."""
        record = self.store.resolve(ref)
        if record is not None:
            return record
        try:
            candidates = self.registries().candidates(ref)
        except InvalidArgument:
            return None
        for candidate in candidates:
            record = self.store.resolve(str(candidate))
            if record is not None:
                return record
        return None

    def list(self) -> list[ImageRecord]:
        return self.store.list()

    def fs_usage(self) -> FsUsage:
        return self.store.fs_usage()

    def remove(self, ref: str) -> None:
        """Remove the image ``ref`` names with all its names; absent is fine.

        An image that containers use is refused (FailedPrecondition naming them).
        """
        record = self.status(ref)
        if record is not None:
            users = self.users(record.id) if self.users is not None else []
            if users:
                raise FailedPrecondition(
                    f"image {ref} ({record.id}) is in use by container(s) "
                    f"{', '.join(sorted(users))}; remove them first",
                    reason="IMAGE_IN_USE",
                )
            self.store.remove(record.id)
            log.info("image removed", extra={"image": record.id, "ref": ref})

    # ------------------------------------------------------------ pulls
    def pull(
        self,
        image: str,
        credentials: Credentials | None,
        ctx: CallContext,
        server_address: str = "",
    ) -> ImageRecord:
        """Pull ``image`` and return its record; raises a domain error naming the cause."""
        started = time.monotonic()
        try:
            candidates = self.registries().candidates(image)
            key = (
                tuple(str(c) for c in candidates),
                _credentials_key(credentials),
                server_address,
            )
            record = self._flights.run(
                key,
                lambda shared: self._pull_candidates(
                    image, candidates, credentials, server_address, shared
                ),
                ctx,
            )
        except PeapodError as exc:
            self.observer.pull_finished(exc.reason or type(exc).__name__.upper())
            raise
        self.observer.pull_finished("success")
        self.observer.pull_succeeded(time.monotonic() - started, record.size)
        return record

    def _pull_candidates(
        self,
        image: str,
        candidates: list[Reference],
        credentials: Credentials | None,
        server_address: str,
        ctx: CallContext,
    ) -> ImageRecord:
        failures: list[tuple[Reference, PeapodError]] = []
        for ref in candidates:
            try:
                return self._pull_reference(ref, credentials, server_address, ctx)
            except (Cancelled, DeadlineExceeded):
                raise
            except PeapodError as exc:
                failures.append((ref, exc))
                if len(candidates) == 1:
                    raise
                log.info(
                    "short-name candidate failed", extra={"ref": str(ref), "error": exc.message}
                )
        first = failures[0][1]
        tried = "; ".join(f"{ref}: {exc.message}" for ref, exc in failures)
        raise type(first)(f"cannot pull {image!r}: every candidate failed: {tried}", first.reason)

    def _pull_reference(
        self,
        ref: Reference,
        credentials: Credentials | None,
        server_address: str,
        ctx: CallContext,
    ) -> ImageRecord:
        sources = self.registries().sources(ref)
        last: PeapodError | None = None
        for source in sources:
            creds = credentials if _credentials_apply(source, ref, server_address) else None
            client = RegistryClient(
                source.endpoint,
                source.insecure,
                creds,
                self.settings.certs_dir,
                read_timeout=self.settings.registry_timeout,
            )
            try:
                with client:
                    record = self._pull_from(client, source, ref, ctx)
            except (Cancelled, DeadlineExceeded):
                raise
            except PeapodError as exc:
                last = exc
                if source.mirror:
                    log.warning(
                        "mirror failed; trying the next source",
                        extra={"mirror": source.endpoint, "ref": str(ref), "error": exc.message},
                    )
                    continue
                raise
            log.info(
                "image pulled",
                extra={"ref": str(ref), "image": record.id, "from": source.endpoint},
            )
            return record
        assert last is not None
        raise last

    def _pull_from(
        self,
        client: RegistryClient,
        source: registries_conf.Source,
        ref: Reference,
        ctx: CallContext,
    ) -> ImageRecord:
        repo = source.repository
        fetched = client.fetch_manifest(repo, source.reference or ref.identifier, ctx)
        self.observer.bytes_downloaded(len(fetched.body))
        top_digest = fetched.digest
        doc = manifests.parse(fetched.body, fetched.media_type, str(ref))
        if isinstance(doc, manifests.ImageIndex):
            chosen = manifests.select(doc, self.platform, str(ref))
            fetched = client.fetch_manifest(repo, chosen.digest, ctx)
            self.observer.bytes_downloaded(len(fetched.body))
            doc = manifests.parse(fetched.body, fetched.media_type, f"{ref} ({self.platform})")
            if not isinstance(doc, manifests.ImageManifest):
                raise DataLoss(
                    f"{ref}: the index entry for {self.platform} is itself an index",
                    reason="BAD_MANIFEST",
                )
        manifest_digest = fetched.digest
        # Everything written from here on is under the lease until the image is recorded,
        # so a concurrent RemoveImage cannot collect it half-way.
        with self.store.lease() as lease:
            self.store.put_blob(manifest_digest, fetched.body, lease)
            config_bytes = self._fetch_config(client, repo, doc.config, lease, ctx)
            config = _parse_config(config_bytes, ref)
            diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
            if len(diff_ids) != len(doc.layers):
                raise DataLoss(
                    f"{ref}: the manifest lists {len(doc.layers)} layers but the image config "
                    f"has {len(diff_ids)} diff_ids",
                    reason="BAD_MANIFEST",
                )
            # The image's content as stored by a registry: manifest, config and layers.
            size = len(fetched.body) + doc.config.size + sum(layer.size for layer in doc.layers)
            names = [f"{ref.name}@{top_digest}"]
            if ref.tag:
                names.insert(0, f"{ref.name}:{ref.tag}")
            self._fetch_layers(client, repo, doc.layers, diff_ids, lease, ctx)
            ctx.check()
            return self.store.add_image(
                image_id=doc.config.digest,
                manifest_digest=manifest_digest,
                manifest_media_type=doc.media_type,
                config_json=config_bytes,
                size=size,
                layers=[(d, layer.digest) for d, layer in zip(diff_ids, doc.layers, strict=True)],
                names=names,
                lease=lease,
            )

    def _fetch_config(
        self,
        client: RegistryClient,
        repo: str,
        desc: manifests.Descriptor,
        lease: Lease,
        ctx: CallContext,
    ) -> bytes:
        if self.store.has_blob(desc.digest):
            try:
                data = self.store.read_blob(desc.digest)
            except (OSError, NotFound):
                pass  # collected meanwhile: download it again
            else:
                self.store.put_blob(desc.digest, data, lease)  # holds it under the lease
                return data
        tmp = self.store.tmp_path("config")
        try:
            client.fetch_blob(
                repo, desc.digest, tmp, ctx, desc.size, self.observer.bytes_downloaded
            )
            data = tmp.read_bytes()
        finally:
            tmp.unlink(missing_ok=True)
        self.store.put_blob(desc.digest, data, lease)
        return data

    def _fetch_layers(
        self,
        client: RegistryClient,
        repo: str,
        layers: list[manifests.Descriptor],
        diff_ids: list[str],
        lease: Lease,
        ctx: CallContext,
    ) -> None:
        todo: list[tuple[manifests.Descriptor, str]] = []
        for layer, diff_id in zip(layers, diff_ids, strict=True):
            if self.store.keep_layer(diff_id, lease):
                self.observer.layer_reused()
            else:
                todo.append((layer, diff_id))
        if not todo:
            return
        # A failure in one layer stops the others through this shared context.
        layer_ctx = ctx.child()
        workers = min(self.settings.max_parallel_downloads, len(todo))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="layer") as pool:
            futures = [
                pool.submit(self._fetch_layer, client, repo, layer, diff_id, lease, layer_ctx)
                for layer, diff_id in todo
            ]
            done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.exception() for f in done):
                layer_ctx.cancel()
            wait(futures)
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            # Report the root cause, not the cancellations it caused in siblings.
            root = next((e for e in errors if not isinstance(e, Cancelled)), errors[0])
            if isinstance(root, Cancelled):
                ctx.check()
            raise root  # type: ignore[misc]

    def _fetch_layer(
        self,
        client: RegistryClient,
        repo: str,
        layer: manifests.Descriptor,
        diff_id: str,
        lease: Lease,
        ctx: CallContext,
    ) -> None:
        compression = manifests.compression(layer)
        tmp = self.store.tmp_path("layer")
        try:
            client.fetch_blob(
                repo, layer.digest, tmp, ctx, layer.size, self.observer.bytes_downloaded
            )
            self.observer.layer_downloaded(layer.size)
            info = self.store.ensure_layer(diff_id, tmp, compression, lease, ctx)
            if info.reused:
                self.observer.layer_reused()
        finally:
            tmp.unlink(missing_ok=True)


def _parse_config(data: bytes, ref: Reference) -> dict[str, Any]:
    try:
        config = json.loads(data)
    except ValueError:
        raise DataLoss(
            f"{ref}: the image config is not valid JSON", reason="BAD_MANIFEST"
        ) from None
    if not isinstance(config, dict):
        raise DataLoss(f"{ref}: the image config is not a JSON object", reason="BAD_MANIFEST")
    return config


def _credentials_apply(source: registries_conf.Source, ref: Reference, server: str) -> bool:
    """Send the request's credentials only to the registry they were given for."""
    if not server:
        return not source.mirror
    host = server.split("://", 1)[-1].split("/", 1)[0]
    if host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        host = "registry-1.docker.io"
    return source.endpoint == host or (not source.mirror and ref.domain == host)


def _credentials_key(creds: Credentials | None) -> str:
    if creds is None:
        return ""
    material = "\0".join(
        (creds.username, creds.password, creds.auth, creds.identity_token, creds.registry_token)
    )
    return hashlib.sha256(material.encode()).hexdigest()


def _stat_key(path: Path | None) -> tuple[Any, ...]:
    if path is None:
        return ()
    try:
        st = path.stat()
    except OSError:
        return ("absent",)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _dir_key(path: Path | None) -> tuple[Any, ...]:
    if path is None:
        return ()
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return ("absent",)
    return tuple((e.name, _stat_key(Path(e.path))) for e in entries)


__all__ = ["ImageService", "NotFound", "PullObserver", "PullSettings"]
