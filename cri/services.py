"""The domain services one daemon owns, built from its configuration.

Handlers receive a ``Services`` as their first argument. This is the one place
that reads ``Config`` into the domain packages' own settings, so ``sandbox``,
``oci``, ``cni`` and ``conmon`` never see the CRI layer's configuration.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from base.db import Database
from base.errors import InvalidArgument
from base.event_bus import EventBus
from base.pending import LateObserver
from cni import CNIClient
from cni.client import PluginObserver
from cri import __version__
from cri.config import Config
from cri.liveness import LivenessProbe
from cri.metrics import (
    CniPluginMetrics,
    ContainerMetrics,
    LateWorkMetrics,
    Metrics,
    NRIMetrics,
    PodNetworkObserver,
    PullObserver,
    StreamingMetrics,
    set_default_runtime,
    track_pods,
)
from cri.streaming.server import StreamServer
from nri.runtime import NRIObserver
from nri.service import NRIService
from nri.settings import NRISettings
from oci.container.events import LifecycleEvent, LifecyclePublisher
from oci.container.exits import ContainerObserver
from oci.container.manager import ContainerManager, PodLookup
from oci.container.runtimes import RuntimeHandler, RuntimeHandlers, resolve_binary
from oci.container.settings import ContainerSettings
from oci.container.store import ContainerStore
from oci.container.userns_probe import probe_user_namespaces
from oci.image.service import ImageService, PullSettings
from oci.image.store import ImageStore
from oci.spec.inputs import CgroupDriver, DaemonFacts
from oci.spec.seccomp import read_profile
from oci.stats.collector import StatsCollector
from oci.stats.metric_catalog import select_families
from oci.stats.pod_metrics_service import PodMetricsService
from oci.stats.service import StatsService, StatsSettings
from sandbox.build import PodSettings
from sandbox.manager import PodManager
from sandbox.network import NetworkObserver, PodNetwork
from sandbox.store import SandboxStore

log = logging.getLogger("peapod.daemon")

_CONMON_LEVELS = {"debug": "debug", "info": "info", "warning": "warn", "error": "error"}


class Services:
    """Everything one running peapod owns below the gRPC layer."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.version = __version__
        self.started_at = time.time()
        self.pod_cidr = ""
        self.metrics = Metrics()
        config.runroot_path.mkdir(parents=True, exist_ok=True)
        self.db = Database(config.db_path)
        self.images = image_service(config, self.db, PullObserver(self.metrics))
        late = LateWorkMetrics(self.metrics)
        self.pods = pod_manager(config, self.db, PodNetworkObserver(self.metrics),
                                CniPluginMetrics(self.metrics), late)  # fmt: skip
        self.runtimes = runtime_handlers(config)
        self.runtimes.set_host_user_namespaces(probe_user_namespaces(
            config.root_path, [config.runroot_path / "containers", config.runroot_path / "pods"]
        ))
        set_default_runtime(self.metrics, config.runtime.default_runtime)
        observer = ContainerMetrics(self.metrics)
        self.containers = container_manager(
            config, self.db, self.runtimes, self.images, self.pods, observer, late
        )
        observer.track(self.containers.count_by_state)
        track_pods(self.metrics, lambda: collections.Counter(p.state for p in self.pods.list()))
        self.pods.containers = self.containers
        self.images.users = self.containers.image_users
        self.streams = StreamServer(config.streaming, self.containers, self.pods,
                                   StreamingMetrics(self.metrics))  # fmt: skip
        self.events: EventBus[LifecycleEvent] = events_bus(config, self.pods, self.containers)
        self.liveness = LivenessProbe([self.containers.probe_monitors, self.pods.probe_infras])
        self.nri = nri_service(config, self.pods, self.containers,
                               NRIMetrics(self.metrics))  # None: NRI is off
        self.stats = stats_service(config, self.containers, self.pods)
        self.stats_collector = StatsCollector(self.stats, config.stats.collection_period)
        self.pod_metrics = PodMetricsService(
            self.stats, select_families(config.stats.included_pod_metrics)
        )

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded ``config`` (SIGHUP) to what can change while running.

        The runtime handlers, the RuntimeDefault seccomp profile and conmon's log level,
        for pods and containers created from now on. Everything is checked before
        anything changes: a bad handler or profile raises and leaves all as it was.
        """
        handlers = handler_table(config)
        if config.runtime.seccomp_profile:
            read_profile(config.runtime.seccomp_profile)
        self.runtimes.replace(handlers, config.runtime.default_runtime)
        set_default_runtime(self.metrics, config.runtime.default_runtime)
        ctrs = self.containers
        ctrs.facts = replace(ctrs.facts, seccomp_profile_path=config.runtime.seccomp_profile)
        ctrs.settings = replace(ctrs.settings,
                                monitor_log_level=_CONMON_LEVELS.get(config.log_level, "info"))
        self.config = config

    def close(self) -> None:
        """Release everything, in the reverse order of use."""
        if self.nri is not None:
            self.nri.close()
        self.stats_collector.close()
        self.events.close()
        self.streams.stop()
        self.liveness.close()
        self.pods.close()
        self.containers.close()
        self.metrics.close()
        self.images.close()
        self.db.close()


def nri_service(config: Config, pods: PodManager, containers: ContainerManager,
                observer: NRIObserver | None = None) -> NRIService | None:
    """NRI plugins hooked into the pods and containers; None if ``nri.enable`` is off."""
    nri = config.nri
    if not nri.enable:
        return None
    settings = NRISettings(
        socket_path=nri.socket_path if nri.allow_external_connections else "",
        socket_mode=int(nri.socket_mode, 8),
        plugin_dirs=tuple(nri.plugin_dirs),
        plugin_config_dir=nri.plugin_config_dir,
        registration_timeout=nri.plugin_registration_timeout,
        request_timeout=nri.plugin_request_timeout,
        fail_on_timeout=nri.on_timeout == "fail",
        runtime_version=__version__,
    )
    return NRIService(settings, pods, containers, observer)


def image_service(config: Config, db: Database, observer: PullObserver) -> ImageService:
    """The image service over ``<root>/images``; a broken registries.conf fails here."""
    img = config.image
    settings = PullSettings(
        registries_conf=Path(img.registries_conf) if img.registries_conf else None,
        registries_conf_dir=Path(img.registries_conf_dir) if img.registries_conf_dir else None,
        default_search=tuple(img.default_search_registries),
        certs_dir=Path(img.certs_dir) if img.certs_dir else None,
        max_parallel_downloads=max(1, img.max_parallel_downloads),
        registry_timeout=img.registry_timeout,
    )
    service = ImageService(ImageStore(config.image_root, db), settings, observer)
    service.registries()  # a broken registries.conf fails at start-up, not at first pull
    return service


def pod_manager(
    config: Config,
    db: Database,
    observer: NetworkObserver | None = None,
    plugin_observer: PluginObserver | None = None,
    late_observer: LateObserver | None = None,
) -> PodManager:
    """The pod manager with its CNI network and settings."""
    net = config.network
    client = CNIClient(net.plugin_dirs, plugin_timeout=net.plugin_timeout,
                       observer=plugin_observer)  # fmt: skip
    network = PodNetwork(client, net.network_dir, net.default_network,
                         net.wait_for_config, observer)  # fmt: skip
    settings = PodSettings(
        pods_dir=config.runroot_path / "pods",
        cgroup_driver=config.cgroup_manager,
        default_cgroup_parent=config.sandbox.default_cgroup_parent,
        shm_size=config.sandbox.shm_size,
        create_timeout=config.sandbox.create_timeout,
        teardown_timeout=max(net.plugin_timeout * 2, 30.0),
    )
    return PodManager(settings, SandboxStore(db), network, keep_for=config.kept_for_retry,
                      late_observer=late_observer)  # fmt: skip


def events_bus(
    config: Config, pods: PodManager, containers: ContainerManager
) -> EventBus[LifecycleEvent]:
    """The lifecycle event bus, fed by the pods and containers if events are enabled."""
    backlog = max(1, config.events.subscriber_queue // 2)
    bus: EventBus[LifecycleEvent] = EventBus(backlog_limit=backlog)
    if config.events.enable:
        publisher = LifecyclePublisher(bus, pods.store.get, containers.store)
        pods.lifecycle = publisher
        containers.store.on_change = publisher.container_changed
    return bus


def runtime_handlers(config: Config) -> RuntimeHandlers:
    """The configured runtime handlers, paths resolved; a missing binary is logged."""
    return RuntimeHandlers(handler_table(config), config.runtime.default_runtime)


def handler_table(config: Config) -> dict[str, RuntimeHandler]:
    """Each configured handler by name, paths resolved; a missing binary is logged."""
    handlers = {}
    for name, h in config.runtime.runtimes.items():
        root = h.runtime_root or str(config.runroot_path / "runtimes" / name)
        handlers[name] = RuntimeHandler(
            name=name,
            runtime_path=resolve_binary(h.runtime_path or name),
            runtime_root=root,
            monitor_path=resolve_binary(h.monitor_path),
            monitor_env=_env(h.monitor_env, f"runtime.runtimes.{name}"),
            create_timeout=h.create_timeout,
        )
        for what, path in (("runtime", handlers[name].runtime_path),
                           ("monitor", handlers[name].monitor_path)):  # fmt: skip
            if not os.access(path, os.X_OK):
                log.warning(
                    "runtime handler binary missing; containers of this handler will fail",
                    extra={"handler": name, "what": what, "path": path},
                )
    return handlers


def _env(items: list[str], where: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{where}: monitor_env entry {item!r} is not KEY=value")
        env[key] = value
    return env


def container_settings(config: Config) -> ContainerSettings:
    """Container directories under root and runroot, and the per-container limits."""
    run = config.runroot_path
    return ContainerSettings(
        containers_dir=config.root_path / "containers",
        bundles_dir=run / "containers",
        exit_dir=run / "exits",
        socket_dir=run / "sockets",
        exec_dir=run / "exec",
        monitor_log_level=_CONMON_LEVELS.get(config.log_level, "info"),
        log_size_max=config.runtime.log_size_max,
        exec_output_max=config.runtime.exec_output_max,
    )


def stats_service(
    config: Config, containers: ContainerManager, pods: PodManager
) -> StatsService:
    """Container and pod stats; writable layers are reported on the containers' directory."""
    settings = StatsSettings(
        collection_period=config.stats.collection_period,
        walk_budget=config.stats.walk_budget,
        mountpoint=str(container_settings(config).containers_dir),
    )
    return StatsService(settings, containers, pods)


def container_manager(
    config: Config,
    db: Database,
    handlers: RuntimeHandlers,
    images: ImageService,
    pods: PodLookup | None = None,
    observer: ContainerObserver | None = None,
    late_observer: LateObserver | None = None,
) -> ContainerManager:
    """The container manager, with the host facts detected once."""
    facts = DaemonFacts.detect(
        cgroup_driver=CgroupDriver(config.cgroup_manager),
        seccomp_profile_path=config.runtime.seccomp_profile,
        pids_limit=config.runtime.pids_limit,
    )
    return ContainerManager(
        container_settings(config), ContainerStore(db), handlers, images, facts, pods, observer,
        keep_for=config.kept_for_retry, late_observer=late_observer,
    )
