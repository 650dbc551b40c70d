"""Prometheus metrics of one daemon and the HTTP endpoint that serves them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from base.errors import FailedPrecondition, InvalidArgument
from cri import process_metrics

log = logging.getLogger("peapod.metrics")

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
)
PULL_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
LAYER_SIZE_BUCKETS = tuple(float(1 << n) for n in range(10, 35, 2))  # 1 KiB .. 16 GiB
# The image size label of peapod_image_pull_duration_seconds: a fixed set, upper bounds.
IMAGE_SIZE_CLASSES = ((1 << 20, "<1MiB"), (10 << 20, "1-10MiB"), (100 << 20, "10-100MiB"),
                      (1 << 30, "100MiB-1GiB"))  # fmt: skip
IMAGE_SIZE_LARGEST = ">1GiB"


def image_size_class(size: int) -> str:
    """The label for an image of ``size`` bytes: one of five fixed classes."""
    return next((name for bound, name in IMAGE_SIZE_CLASSES if size < bound), IMAGE_SIZE_LARGEST)


class Metrics:
    """Every metric peapod exports, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.operations = Counter(
            "peapod_operations", "CRI calls received, by rpc.", ["operation"], registry=r
        )
        self.operation_errors = Counter(
            "peapod_operations_errors",
            "CRI calls that failed, by rpc and gRPC status code.",
            ["operation", "code"],
            registry=r,
        )
        self.operation_latency = Histogram(
            "peapod_operations_latency_seconds",
            "Time to answer a CRI call, by rpc.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.image_pull_bytes = Counter(
            "peapod_image_pulls_bytes",
            "Bytes of image content downloaded from registries.",
            registry=r,
        )
        self.image_pulls = Counter(
            "peapod_image_pulls",
            "Image pulls by result: success, or the failure reason (NOT_FOUND, UNAUTHORIZED...).",
            ["result"],
            registry=r,
        )
        self.image_layers_reused = Counter(
            "peapod_image_layer_reuse",
            "Layers a pull found already unpacked in the store and did not download.",
            registry=r,
        )
        self.network_setup_latency = Histogram(
            "peapod_network_setup_seconds",
            "Time to attach a pod to its networks (every CNI ADD of RunPodSandbox).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.network_teardown_latency = Histogram(
            "peapod_network_teardown_seconds",
            "Time to detach a pod from its networks (every CNI DEL), successful runs only.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cni_errors = Counter(
            "peapod_cni_errors",
            "CNI plugin runs that failed, by plugin type.",
            ["plugin"],
            registry=r,
        )
        self.containers = Gauge(
            "peapod_containers",
            "Containers by state (created, running, exited).",
            ["state"],
            registry=r,
        )
        self.containers_oom = Counter(
            "peapod_containers_oom",
            "Containers killed by the kernel's OOM killer (conmon's oom marker).",
            registry=r,
        )
        self.containers_stopped_monitor = Counter(
            "peapod_containers_stopped_monitor",
            "Running containers whose conmon died while they kept running (their exit "
            "cannot be noticed); found by the liveness probe.",
            registry=r,
        )
        self.events_dropped_subscribers = Counter(
            "peapod_container_events_dropped_subscribers",
            "GetContainerEvents streams ended because their subscriber fell "
            "events.subscriber_queue events behind.",
            registry=r,
        )
        self.events_subscribers = Gauge(
            "peapod_container_events_subscribers", "GetContainerEvents streams open now.",
            registry=r,
        )
        self.containers_oom_by_namespace = Counter(
            "peapod_containers_oom_by_namespace",
            "Containers killed by the kernel's OOM killer, by their pod's namespace.",
            ["namespace"],
            registry=r,
        )
        self.exec_sync = Counter(
            "peapod_exec_sync",
            "ExecSync commands run, by outcome (exit_zero, exit_nonzero, timeout).",
            ["outcome"],
            registry=r,
        )
        self.streaming_sessions = Counter(
            "peapod_streaming_sessions",
            "Exec, attach and port-forward sessions started, by kind and protocol "
            "(spdy, websocket, or spdy-over-websocket for the tunnelled port-forward).",
            ["kind", "protocol"],
            registry=r,
        )
        self.streaming_sessions_active = Gauge(
            "peapod_streaming_sessions_active",
            "Exec, attach and port-forward sessions open now, by kind and protocol.",
            ["kind", "protocol"],
            registry=r,
        )
        self.streaming_refused = Counter(
            "peapod_streaming_refused",
            "Streaming connections turned away, by reason (capacity: streaming.max_sessions "
            "open; token: unknown, used or expired URL; request: bad path, method or upgrade).",
            ["reason"],
            registry=r,
        )
        self.image_pull_duration = Histogram(
            "peapod_image_pull_duration_seconds",
            "Time of successful image pulls, by the image's size class (<1MiB ... >1GiB).",
            ["size"],
            buckets=PULL_BUCKETS,
            registry=r,
        )
        self.image_layer_size = Histogram(
            "peapod_image_pulls_layer_size_bytes",
            "Size of each layer downloaded by a pull, as the registry serves it.",
            buckets=LAYER_SIZE_BUCKETS,
            registry=r,
        )
        self.cni_plugin_latency = Histogram(
            "peapod_cni_plugin_duration_seconds",
            "Time of one CNI plugin run, failed or not, by plugin type and operation "
            "(ADD, DEL, CHECK, STATUS, GC).",
            ["plugin", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.nri_plugin_latency = Histogram(
            "peapod_nri_plugin_duration_seconds",
            "Time of one call to an NRI plugin, answered or not, by plugin (<index>-<name>) and "
            "method (RunPodSandbox, CreateContainer, Synchronize...).",
            ["plugin", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.nri_plugins_dropped = Counter(
            "peapod_nri_plugins_dropped",
            "NRI plugins disconnected by peapod or lost: timed out, broke the protocol, asked "
            "for what peapod cannot honour, or hung up in the middle of a call.",
            registry=r,
        )
        self.resources_late = Counter(
            "peapod_resources_late",
            "RunPodSandbox and CreateContainer work that outlived its caller's deadline, by "
            "resource (pod, container) and event: outlived (the caller gave up, the work "
            "went on), handed (a retry received the result), discarded (nobody came back).",
            ["resource", "event"],
            registry=r,
        )
        self.pods = Gauge(
            "peapod_pods", "Pod sandboxes by state (ready, notready).", ["state"], registry=r
        )
        self.default_runtime = Gauge(
            "peapod_default_runtime",
            "1 for the runtime handler used when a pod names none (runtime.default_runtime).",
            ["runtime"],
            registry=r,
        )
        self._unregister_process = process_metrics.register(r)
        self._server: Any = None

    def serve(self, address: str) -> tuple[str, int] | None:
        """Serve /metrics on ``HOST:PORT``; port 0 picks a free port. Returns the bound address."""
        if not address:
            return None
        host, sep, port_text = address.rpartition(":")
        if not sep or not port_text.isdigit():
            raise InvalidArgument(f"metrics address {address!r} must be HOST:PORT")
        host = host.strip("[]") or "127.0.0.1"
        try:
            server, _thread = start_http_server(int(port_text), addr=host, registry=self.registry)
        except OSError as exc:
            raise FailedPrecondition(
                f"cannot serve metrics on {address} (key metrics.address): "
                f"{exc.strerror or exc}; free the port, or change or empty metrics.address",
                reason="METRICS_ADDRESS",
            ) from None
        self._server = server
        bound = server.server_address
        log.info("metrics served", extra={"address": f"{bound[0]}:{bound[1]}"})
        return bound[0], bound[1]

    def close(self) -> None:
        self._unregister_process()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class ContainerMetrics:
    """What the container code reports, turned into metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def oom_killed(self, namespace: str) -> None:
        self._m.containers_oom.inc()
        self._m.containers_oom_by_namespace.labels(namespace).inc()

    def monitor_lost(self) -> None:
        self._m.containers_stopped_monitor.inc()

    def exec_sync_finished(self, exit_code: int, timed_out: bool) -> None:
        outcome = "timeout" if timed_out else "exit_zero" if exit_code == 0 else "exit_nonzero"
        self._m.exec_sync.labels(outcome).inc()

    def track(self, count_by_state: Callable[[], dict[str, int]]) -> None:
        """Report the number of containers per state, read at each scrape."""
        for state in ("created", "running", "exited"):
            self._m.containers.labels(state).set_function(
                lambda s=state: count_by_state().get(s, 0)
            )


class PullObserver:
    """What the image service reports about pulls, turned into metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def bytes_downloaded(self, count: int) -> None:
        self._m.image_pull_bytes.inc(count)

    def layer_reused(self) -> None:
        self._m.image_layers_reused.inc()

    def layer_downloaded(self, size: int) -> None:
        self._m.image_layer_size.observe(size)

    def pull_finished(self, result: str) -> None:
        self._m.image_pulls.labels(result).inc()

    def pull_succeeded(self, seconds: float, image_size: int) -> None:
        self._m.image_pull_duration.labels(image_size_class(image_size)).observe(seconds)


class PodNetworkObserver:
    """What the pod network code reports, turned into metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def setup_finished(self, seconds: float) -> None:
        self._m.network_setup_latency.observe(seconds)

    def teardown_finished(self, seconds: float) -> None:
        self._m.network_teardown_latency.observe(seconds)

    def plugin_failed(self, plugin: str) -> None:
        self._m.cni_errors.labels(plugin).inc()


class CniPluginMetrics:
    """What the CNI client reports about plugin runs, turned into metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def plugin_ran(self, plugin: str, command: str, seconds: float) -> None:
        self._m.cni_plugin_latency.labels(plugin, command).observe(seconds)


class NRIMetrics:
    """What the NRI runtime reports about plugin calls, turned into metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def call_finished(self, plugin: str, method: str, seconds: float) -> None:
        self._m.nri_plugin_latency.labels(plugin, method).observe(seconds)

    def plugin_dropped(self, plugin: str) -> None:
        self._m.nri_plugins_dropped.inc()


class StreamingMetrics:
    """What the streaming server reports about sessions, turned into metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def session_started(self, kind: str, protocol: str) -> None:
        self._m.streaming_sessions.labels(kind, protocol).inc()
        self._m.streaming_sessions_active.labels(kind, protocol).inc()

    def session_ended(self, kind: str, protocol: str) -> None:
        self._m.streaming_sessions_active.labels(kind, protocol).dec()

    def refused(self, reason: str) -> None:
        self._m.streaming_refused.labels(reason).inc()


class LateWorkMetrics:
    """What the pod and container managers report about work that outlived its caller."""

    RESOURCES = {"pod-builds": "pod", "container-creates": "container"}

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def late_work(self, name: str, event: str) -> None:
        self._m.resources_late.labels(self.RESOURCES.get(name, name), event).inc()


def track_pods(metrics: Metrics, count_by_state: Callable[[], dict[str, int]]) -> None:
    """Report the number of pod sandboxes per state, read at each scrape."""
    for state in ("ready", "notready"):
        metrics.pods.labels(state).set_function(lambda s=state: count_by_state().get(s, 0))


def set_default_runtime(metrics: Metrics, name: str) -> None:
    """Mark ``name`` as the default runtime handler (and no other)."""
    metrics.default_runtime.clear()
    metrics.default_runtime.labels(name).set(1)
