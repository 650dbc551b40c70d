"""Building a pod sandbox step by step, each step registered on an undo stack.

Order: pod directory, cgroup, pinned namespaces (hostname and sysctls applied
inside; for a ``hostUsers: false`` pod a user namespace first, owning the
others), hostname/resolv.conf/hosts files, /dev/shm tmpfs, log directory,
infra process (pid mode POD), then the network. The record (state "creating")
is saved before the first step, with the cgroup directories it will create, so a
daemon killed half-way leaves a row from which restart recovery takes the pod
apart; what the next steps make is found without the record (the cgroup by that
plan, the namespace and shm mounts under the pod directory, the infra process by
its output file, ``sandbox.recover``), so they cost no write. Before any ADD the
record is saved with all of it and the planned attachments, so a crash mid-ADD
can still be DEL'ed, and each ADD result is kept. A failure undoes
everything newest first, so CNI DEL always runs while the network namespace is
still pinned, and the row goes last.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from base.cancel import CallContext
from base.errors import PeapodError
from cni import NetworkConfig
from cni.client import add_left_state
from sandbox.cgroup_paths import SYSTEMD
from sandbox.cgroups import create_pod_cgroup, plan_pod_cgroup
from sandbox.hooks import NoPodHooks, PodHooks
from sandbox.infra import INFRA_LOG, start_infra
from sandbox.namespaces import pin_namespaces, unpin
from sandbox.network import PodNetwork, pending_entry, pod_ips
from sandbox.pod_config import POD, PodConfig
from sandbox.pod_files import write_hosts, write_pod_files
from sandbox.record import CREATING, NOTREADY, READY, SandboxRecord
from sandbox.shm import mount_shm, unmount_shm
from sandbox.store import SandboxStore
from sandbox.teardown import remove_pod_dir
from sandbox.undo import StopRollback, UndoStack
from sandbox.userns import pin_in_user_namespace

log = logging.getLogger("peapod.sandbox")


@dataclass(frozen=True)
class PodSettings:
    """The daemon configuration the sandbox code needs."""

    pods_dir: Path  # <runroot>/pods: one directory per pod
    cgroup_driver: str = "cgroupfs"
    default_cgroup_parent: str = "peapod"
    shm_size: int = 64 * 1024 * 1024
    create_timeout: float = 240.0
    teardown_timeout: float = 120.0  # budget of a background DEL attempt


class KeptPod(Exception):
    """A failed build whose network could not be torn down: the pod was kept NOTREADY."""

    def __init__(self, record: SandboxRecord, error: PeapodError) -> None:
        super().__init__(error.message)
        self.record = record
        self.error = error


def pod_cgroup_parent(settings: PodSettings, requested: str, pod_id: str) -> str:
    """The pod's cgroup in driver syntax: the kubelet's, or one of peapod's own."""
    if requested and requested != "/":
        return requested
    base = settings.default_cgroup_parent.strip("/")
    if settings.cgroup_driver == SYSTEMD:
        return f"{base}-pod{pod_id}.slice"
    return f"/{base}/pod{pod_id}"


class PodBuild:
    """One RunPodSandbox's work on one pod; ``record`` is its latest state."""

    def __init__(
        self,
        settings: PodSettings,
        store: SandboxStore,
        network: PodNetwork,
        record: SandboxRecord,
        config: PodConfig,
        hooks: PodHooks | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.network = network
        self.record = record
        self.config = config
        self.hooks: PodHooks = hooks or NoPodHooks()
        self.undo = UndoStack()

    def _set(self, **changes: object) -> None:
        self.record = replace(self.record, **changes)  # type: ignore[arg-type]

    def run(self, network: NetworkConfig | None, ctx: CallContext) -> SandboxRecord:
        """Build the pod; on failure undo it all and re-raise (or raise KeptPod)."""
        try:
            self._local(ctx)
            if network is not None:
                self._network(network, ctx)
            self._set(state=READY)
            # The hooks (NRI plugins) see the pod before anyone else; a refusal rolls it back.
            self.undo.push("lifecycle hooks", lambda: self.hooks.abandoned(self.record))
            self.hooks.run(self.record, lambda: self.store.put(self.record))
        except BaseException as exc:
            problems = self.undo.rollback()
            if self.undo.stopped and isinstance(exc, PeapodError):
                raise self._keep(exc, problems) from exc
            if problems and isinstance(exc, PeapodError):
                raise type(exc)(
                    f"{exc.message}; cleaning up also failed: {'; '.join(problems)}",
                    reason=exc.reason,
                ) from exc
            raise
        self.undo.discard()
        return self.record

    # ---- steps ----------------------------------------------------------
    def _local(self, ctx: CallContext) -> None:
        # The cgroup is planned into the first save, so a daemon killed while making it
        # leaves a row listing what to remove.
        planned = plan_pod_cgroup(self.record.cgroup_parent, self.settings.cgroup_driver)
        self._set(cgroup=planned.to_record())
        rec, cfg = self.record, self.config
        self.store.save(rec)  # state "creating": restart recovery takes apart what it lists
        self.undo.push("state row", lambda: self.store.delete_row(rec.id))
        pod_dir = Path(rec.pod_dir)
        pod_dir.mkdir(parents=True, exist_ok=False)
        self.undo.push("pod directory", lambda: remove_pod_dir(pod_dir))
        _restrict_pod_dir(pod_dir, cfg.userns.root_gid if cfg.userns is not None else None)

        cgroup = create_pod_cgroup(rec.cgroup_parent, self.settings.cgroup_driver)
        self._set(cgroup=cgroup.to_record())
        self.undo.push("pod cgroup", cgroup.remove)

        kinds = set()
        if not cfg.host_network:
            kinds |= {"net", "uts"}
        if not cfg.host_ipc:
            kinds.add("ipc")
        hostname = None if cfg.host_network else rec.hostname
        if cfg.userns is not None:  # the pod's own user namespace owns the others
            ns = pin_in_user_namespace(pod_dir / "ns", kinds, cfg.userns, hostname,
                                       cfg.sysctls, ctx)  # fmt: skip
        else:
            ns = pin_namespaces(pod_dir / "ns", kinds, hostname, cfg.sysctls, ctx)
        self._set(ns_paths={k: str(p) for k, p in ns.items()})
        self.undo.push("pinned namespaces", lambda: unpin(ns))

        write_pod_files(pod_dir, rec.hostname, cfg.dns, cfg.host_network)

        if not cfg.host_ipc:
            shm = pod_dir / "shm"
            mount_shm(shm, self.settings.shm_size)
            self._set(shm_path=str(shm))
            self.undo.push("shm", lambda: unmount_shm(shm))

        if cfg.log_directory:
            Path(cfg.log_directory).mkdir(mode=0o755, parents=True, exist_ok=True)

        if cfg.pid_mode == POD:
            ctx.check()
            infra = start_infra(ns, cgroup, pod_dir / INFRA_LOG)
            self._set(infra=infra.to_record())
            self.undo.push("infra process", lambda: infra.stop())

    def _network(self, network: NetworkConfig, ctx: CallContext) -> None:
        rec = self.record
        netns = rec.ns_paths["net"]
        plans = self.network.plan(
            network, rec.id, netns, rec.metadata, self.config.port_mappings,
            self.config.bandwidth(),
        )
        entries = [pending_entry(n, r) for n, r in plans]
        self._set(attachments=list(entries))
        self.store.save(self.record)  # recovery can DEL these

        started = time.monotonic()
        for index, (net, runtime) in enumerate(plans):
            ctx.check()
            try:
                attachment = self.network.attach(net, runtime, ctx)
            except PeapodError as exc:
                if add_left_state(exc):
                    # ADD's own rollback DEL failed: DEL again from the recorded entry when
                    # undoing, and keep the pod (netns pinned) if that fails too.
                    self.undo.push(f"CNI ADD of {net.name}", self._undo_attach(index))
                raise
            entries[index] = attachment.to_dict()
            self._set(attachments=list(entries))
            self.undo.push(f"CNI ADD of {net.name}", self._undo_attach(index))
        self.network.timed_setup(started)
        ips = pod_ips(entries)
        write_hosts(Path(rec.hosts_path), rec.hostname, ips)
        self._set(ips=ips)

    def _undo_attach(self, index: int) -> Callable[[], None]:
        def undo() -> None:
            entry = self.record.attachments[index]
            try:
                self.network.detach_all(
                    [entry], CallContext.with_timeout(self.settings.teardown_timeout, "CNI DEL")
                )
            except PeapodError as exc:
                raise StopRollback(exc.message) from exc
            remaining = [e for i, e in enumerate(self.record.attachments) if i != index]
            self._set(attachments=remaining)

        return undo

    def _keep(self, exc: PeapodError, problems: list[str]) -> KeptPod:
        """Keep the half-built pod NOTREADY so its DEL can be retried before unpinning."""
        self._set(state=NOTREADY, ips=[], pending_network_teardown=True,
                  network_error="; ".join(problems))
        try:
            self.store.put(self.record)
        except Exception:  # the row may be gone with the database; still report the cause
            log.exception("cannot save a kept pod", extra={"pod": self.record.id})
        error = type(exc)(
            f"{exc.message}; tearing its network down failed too ({'; '.join(problems)}), so "
            f"pod {self.record.id} is kept NOTREADY with its namespaces while DEL is retried; "
            "remove it with RemovePodSandbox",
            reason=exc.reason,
        )
        return KeptPod(self.record, error)


def new_record(
    settings: PodSettings, pod_id: str, config: PodConfig, runtime_handler: str
) -> SandboxRecord:
    """The record of a pod about to be built (state "creating")."""
    meta = config.metadata
    hostname = socket.gethostname() if config.host_network else config.hostname or pod_id[:12]
    return SandboxRecord(
        id=pod_id,
        name=meta.sandbox_name(),
        metadata=meta,
        state=CREATING,
        created_at=time.time_ns(),
        runtime_handler=runtime_handler,
        labels=dict(config.labels),
        annotations=dict(config.annotations),
        log_directory=config.log_directory,
        hostname=hostname,
        dns=config.dns,
        port_mappings=[dataclasses.replace(m) for m in config.port_mappings],
        host_network=config.host_network,
        host_ipc=config.host_ipc,
        host_pid=config.host_pid,
        pid_mode=config.pid_mode,
        userns=config.userns.to_record() if config.userns is not None else None,
        sysctls=dict(config.sysctls),
        pod_dir=str(settings.pods_dir / pod_id),
        cgroup_parent=pod_cgroup_parent(settings, config.cgroup_parent, pod_id),
        security=dict(config.security),
        overhead=dict(config.overhead),
        resources=dict(config.resources),
    )


def _restrict_pod_dir(pod_dir: Path, root_gid: int | None) -> None:
    """No other host user may reach the pod's files (its shm is 1777 inside): 0700, or
    0710 with the group of a user-namespaced pod's root, whose runc init binds them."""
    if root_gid is None:
        os.chmod(pod_dir, 0o700)
        return
    os.chown(pod_dir, -1, root_gid)
    os.chmod(pod_dir, 0o710)
