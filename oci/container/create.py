"""CreateContainer: from a validated request to a created (not started) container.

The steps, each undone in reverse order if a later one fails:

1. reserve the name and store a ``creating`` record (so a crash mid-way is
   cleaned up at the next start);
2. hold the image's layers (RemoveImage keeps them while the container exists);
3. mount the overlay root filesystem, and the image volumes (``image_volumes``); in
   a pod with its own user namespace, over ID-mapped layers, with ID-mapped binds
   (``idmapped``);
4. generate the OCI spec and write the bundle's config.json;
5. have conmon run ``<runtime> create``; conmon joins the pod's cgroup first so a
   service manager stopping the daemon does not take it along.

The caller holds the pod's lock, so the pod cannot be stopped or removed meanwhile;
StopPodSandbox and RemovePodSandbox cancel the build's context instead of waiting for
it. Every blocking step heeds that context (conmon's launch looks at it while it
waits on the runtime), and a cancelled build rolls back like a failed one.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from base.cancel import CallContext
from base.errors import FailedPrecondition, InvalidArgument, NotFound, PeapodError
from base.text import check_path, shorten
from conmon import procs
from conmon.launch import create_container
from conmon.paths import MonitorPaths
from oci.container import idmapped, image_volumes, rootfs
from oci.container.idmapped import IdMapper
from oci.container.record import CREATED, CREATING, EXITED, RUNNING, ContainerRecord
from oci.container.runtimes import RuntimeHandler
from oci.image.store import ImageRecord
from oci.spec.executable import check_executable
from oci.spec.generate import generate_spec
from oci.spec.inputs import (
    ContainerRequest,
    ImageConfig,
    NamespaceMode,
)
from oci.spec.process import stop_signal
from sandbox.cgroup_layout import V2
from sandbox.cgroups import PodCgroup
from sandbox.facts import SandboxFacts
from sandbox.undo import StopRollback, UndoStack

if TYPE_CHECKING:
    from oci.container.hooks import ContainerHooks
    from oci.container.runtimes import RuntimeHandlers
    from oci.container.settings import ContainerSettings
    from oci.container.store import ContainerStore
    from oci.image.service import ImageService
    from oci.spec.inputs import DaemonFacts

log = logging.getLogger("peapod.containers")

POD_READY = "ready"
UNKNOWN_EXIT = 255


class PodMetadataView(Protocol):
    name: str
    uid: str
    namespace: str


class PodView(Protocol):
    """What creating a container reads from its pod sandbox."""

    id: str
    state: str
    runtime_handler: str
    log_directory: str
    metadata: Any  # PodMetadataView
    cgroup: dict[str, Any] | None

    def facts(self) -> SandboxFacts: ...


@dataclass(frozen=True)
class CreateRequest:
    """CreateContainer in domain terms; ``container.id`` is assigned here."""

    pod_id: str
    container: ContainerRequest
    attempt: int = 0
    image: str = ""
    image_annotations: Mapping[str, str] = field(default_factory=dict)
    user_specified_image: str = ""
    log_path: str = ""  # relative to the pod's log directory
    stop_signal: str = ""  # "" means the image's, else SIGTERM


def container_name(pod: PodView, metadata_name: str, attempt: int) -> str:
    """``k8s_<container>_<pod>_<namespace>_<uid>_<attempt>``, as the kubelet's tools expect."""
    md = pod.metadata
    return f"k8s_{metadata_name}_{md.name}_{md.namespace}_{md.uid}_{attempt}"


def image_config(image: ImageRecord) -> ImageConfig:
    """The runtime part of an image's config."""
    cfg = image.config.get("config") or {}

    def strings(key: str) -> tuple[str, ...]:
        value = cfg.get(key) or []
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    return ImageConfig(
        entrypoint=strings("Entrypoint"),
        cmd=strings("Cmd"),
        env=strings("Env"),
        working_dir=str(cfg.get("WorkingDir") or ""),
        user=str(cfg.get("User") or ""),
        stop_signal=str(cfg.get("StopSignal") or ""),
    )


def image_ref(image: ImageRecord, requested: str) -> str:
    """A digest reference of the image, preferring the requested repository; else its ID."""
    repo = requested.split("@", 1)[0].rsplit(":", 1)[0] if "/" in requested else ""
    for digest_ref in image.repo_digests:
        if repo and digest_ref.split("@", 1)[0] == repo:
            return digest_ref
    return image.repo_digests[0] if image.repo_digests else image.id


def check_log_path(relative: str) -> str:
    """A request's log_path: a file path relative to the pod's log directory, inside it.

    The CRI defines it relative to ``log_directory``; an absolute path or one with ".."
    would put a file the daemon creates anywhere on the node.
    """
    if not relative:
        return relative
    check_path(relative, "log_path", absolute=False)
    parts = relative.split("/")
    if relative.startswith("/") or ".." in parts or parts[-1] in ("", "."):
        raise InvalidArgument(
            f"log_path {shorten(relative)} must name a file relative to the pod's "
            "log_directory, without '..' (such as name/0.log)"
        )
    return relative


def log_file(pod: PodView, relative: str, storage_dir: Path) -> str:
    """The container's CRI log: under the pod's log directory, else in its own storage."""
    if pod.log_directory and relative:
        check_log_path(relative)
        directory = os.path.normpath(pod.log_directory)
        path = os.path.normpath(os.path.join(directory, relative))
        if not path.startswith(directory.rstrip("/") + "/"):
            raise InvalidArgument(
                f"log_path {shorten(relative)} leads outside the pod's log_directory"
            )
        return path
    return str(storage_dir / "container.log")


def monitor_cgroup_files(pod: PodView) -> list[str]:
    """The cgroup.procs files conmon joins: the pod's cgroup in every hierarchy."""
    if not pod.cgroup:
        log.warning("pod has no cgroup; conmon stays in the daemon's", extra={"pod": pod.id})
        return []
    cgroup = PodCgroup.from_record(pod.cgroup)
    files = []
    for d in cgroup.process_dirs():
        if cgroup.version == V2:
            d.mkdir(exist_ok=True)  # the pod's process leaf; removed with the pod's containers
        files.append(str(d / "cgroup.procs"))
    return files


class BuildHost(Protocol):
    """What a container build uses of the container manager."""

    settings: ContainerSettings
    store: ContainerStore
    handlers: RuntimeHandlers
    images: ImageService
    facts: DaemonFacts
    hooks: ContainerHooks

    def remember_spec(self, ctr_id: str, spec: dict[str, Any]) -> None: ...

    def teardown(self, rec: ContainerRecord) -> None: ...


class ContainerBuild:
    """One CreateContainer run."""

    def __init__(self, mgr: BuildHost, pod: PodView, req: CreateRequest) -> None:
        self.mgr = mgr
        self.pod = pod
        self.req = req
        self.undo = UndoStack()
        self.handler: RuntimeHandler | None = None
        self.volume_images: dict[str, ImageRecord] = {}

    def run(self, ctx: CallContext) -> ContainerRecord:
        mgr, pod, req = self.mgr, self.pod, self.req
        if pod.state != POD_READY:
            raise FailedPrecondition(
                f"pod sandbox {pod.id} is not ready (state {pod.state}); cannot create containers"
            )
        handler = self.handler = mgr.handlers.get(pod.runtime_handler)
        image = mgr.images.status(req.image)
        if image is None:
            raise NotFound(
                f"image {shorten(req.image)} is not present on this node; pull it first",
                reason="IMAGE_NOT_FOUND",
            )
        volumes = self.volume_images = image_volumes.find_images(mgr.images, req.container.mounts)
        idmapped.check_mounts(req.container.mounts, pod.facts().userns)
        ctr_id = secrets.token_hex(32)
        request = replace(req.container, id=ctr_id)
        img_cfg = image_config(image)
        sig = stop_signal(req.stop_signal or img_cfg.stop_signal)
        storage = mgr.settings.containers_dir / ctr_id
        bundle = mgr.settings.bundles_dir / ctr_id
        rec = ContainerRecord(
            id=ctr_id,
            sandbox_id=pod.id,
            name=container_name(pod, request.name, req.attempt),
            metadata_name=request.name,
            attempt=req.attempt,
            state=CREATING,
            created_at=time.time_ns(),
            runtime_handler=handler.name,
            runtime_path=handler.runtime_path,
            runtime_root=handler.runtime_root,
            monitor_path=handler.monitor_path,
            monitor_env=dict(handler.monitor_env),
            image=req.image,
            image_id=image.id,
            image_ref=image_ref(image, req.image),
            bundle=str(bundle),
            storage_dir=str(storage),
            log_path=log_file(pod, req.log_path, storage),
            stop_signal=sig.name,
            image_annotations=dict(req.image_annotations),
            user_specified_image=req.user_specified_image,
            labels=dict(request.labels),
            annotations=dict(request.annotations),
            mounts=[_mount_record(m, volumes.get(m.image)) for m in request.mounts],
            resources=asdict(request.resources),
            tty=request.tty,
            stdin=request.stdin,
            stdin_once=request.stdin_once,
        )
        try:
            with mgr.hooks.creation():  # until the container is published or rolled back
                return self._build(rec, request, image, img_cfg, ctx)
        except BaseException:
            problems = self.undo.rollback()
            if problems:
                log.error(
                    "rolling back a failed container create left problems",
                    extra={"container": ctr_id, "problems": "; ".join(problems)},
                )
            raise

    def _build(
        self,
        rec: ContainerRecord,
        request: ContainerRequest,
        image: ImageRecord,
        img_cfg: ImageConfig,
        ctx: CallContext,
    ) -> ContainerRecord:
        mgr, pod = self.mgr, self.pod
        store = mgr.store
        store.insert(rec)
        self.undo.push("container record", lambda: store.delete(rec.id))
        self.undo.push("runtime state", lambda: self._teardown(rec))
        lower = mgr.images.store.hold(rec.id, image.id)

        storage, bundle = Path(rec.storage_dir), Path(rec.bundle)
        for d in (storage, Path(rec.persist_dir), bundle):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        facts = pod.facts()
        mapper = None
        if facts.userns is not None:  # ID-mapped layers and binds (oci.container.idmapped)
            mapper = IdMapper(bundle, Path(facts.userns_path), facts.userns)
            lower = mapper.layers(lower, "l")
            mapper.own_upper(storage / rootfs.UPPER)
        rootfs.mount_rootfs(lower, storage, Path(rec.rootfs))
        mounts = image_volumes.mount_volumes(
            mgr.images.store, rec.id, request.mounts, self.volume_images, bundle, storage,
            mapper,
        )
        if mapper is not None:
            idmapped.release(bundle)  # each overlay holds its own copies of its layers
            mounts = mapper.volumes(mounts)
        request = replace(request, mounts=mounts)
        ctx.check()

        spec = generate_spec(
            request,
            img_cfg,
            facts,
            mgr.facts,
            rec.rootfs,
            target_pidns_path=self._target_pidns(request),
        )
        self.undo.push("lifecycle hooks", lambda: mgr.hooks.abandoned(rec))
        spec = mgr.hooks.create(rec, spec)  # NRI plugins adjust the spec, or refuse
        check_executable(spec, rec.rootfs)
        # Private even in a searchable bundle: the spec holds the container's environment.
        with open(os.open(rec.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
                  encoding="utf-8") as f:  # fmt: skip
            f.write(json.dumps(spec))  # one C-encoded string: json.dump encodes in Python
        os.makedirs(os.path.dirname(rec.log_path), exist_ok=True)
        process = spec["process"]
        rec = replace(
            rec,
            user={
                "uid": process["user"]["uid"],
                "gid": process["user"]["gid"],
                "additional_gids": list(process["user"].get("additionalGids", [])),
            },
        )

        handler = self.handler
        assert handler is not None  # set by run()
        paths = MonitorPaths.standard(
            rec.bundle,
            exit_dir=str(mgr.settings.exit_dir),
            persist_dir=rec.persist_dir,
            socket_dir=str(mgr.settings.socket_dir),
            log_path=rec.log_path,
        )
        left = ctx.timeout(handler.create_timeout)
        created = create_container(
            handler.monitor_path,
            handler.runtime_path,
            handler.runtime_root,
            rec.id,
            rec.name,
            paths,
            tty=request.tty,
            stdin=request.stdin,
            stdin_once=request.stdin_once,
            log_level=mgr.settings.monitor_log_level,
            log_size_max=mgr.settings.log_size_max,
            systemd_cgroup=False,
            cgroup_procs_path=monitor_cgroup_files(pod),
            env=handler.monitor_env,
            timeout=left if left is not None else handler.create_timeout,
            ctx=ctx,
        )
        rec = replace(
            rec,
            state=CREATED,
            pid=created.pid,
            pid_start=created.pid_start_ticks or 0,
            monitor_pid=created.monitor_pid,
            monitor_start=created.monitor_start_ticks or 0,
        )
        ctx.check()
        if mapper is not None:
            idmapped.release(bundle)  # the container holds its own copies of the binds
        stored = store.update(rec.id, lambda _cur: rec)
        assert stored is not None
        self.undo.discard()
        mgr.remember_spec(rec.id, spec)
        return stored

    def _teardown(self, rec: ContainerRecord) -> None:
        """Undo everything below the record; if that fails, keep the record for a later remove."""
        try:
            self.mgr.teardown(rec)
        except PeapodError as exc:
            failed = replace(
                rec,
                state=EXITED,
                exit_code=UNKNOWN_EXIT,
                finished_at=time.time_ns(),
                reason="CreateError",
                message=f"creation failed and cleanup is incomplete: {exc.message}; "
                "remove the container to retry",
            )
            self.mgr.store.update(rec.id, lambda _cur: failed)
            raise StopRollback(exc.message) from exc

    def _target_pidns(self, request: ContainerRequest) -> str:
        options = request.security.namespace_options
        if options.pid is not NamespaceMode.TARGET:
            return ""
        if not options.target_id:
            raise InvalidArgument("pid namespace mode TARGET needs namespace_options.target_id")
        target = self.mgr.store.find(options.target_id)
        if target.sandbox_id != self.pod.id:
            raise InvalidArgument(
                f"target container {target.id} is in another pod; TARGET must name a "
                "container of the same pod"
            )
        if target.state != RUNNING or not procs.is_alive(target.pid):
            raise FailedPrecondition(
                f"target container {target.id} is not running; its pid namespace cannot be joined"
            )
        return f"/proc/{target.pid}/ns/pid"


def _mount_record(m: Any, image: ImageRecord | None) -> dict[str, Any]:
    """A requested mount as ContainerStatus reports it; an image volume's with its image."""
    out = {
        "container_path": m.container_path,
        "host_path": m.host_path,
        "readonly": m.readonly,
        "propagation": m.propagation.name,
        "selinux_relabel": m.selinux_relabel,
        "recursive_read_only": m.recursive_read_only,
    }
    if image is not None:
        out["image"] = {
            "image": m.image,
            "user_specified_image": m.user_specified_image,
            "image_id": image.id,
            "image_sub_path": m.image_sub_path,
        }
    return out


def signal_number(name: str) -> int:
    """The number of a signal name such as "SIGTERM"."""
    return int(signal.Signals[name])
