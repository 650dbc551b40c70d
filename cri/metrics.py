"""Prometheus metrics of one daemon and the HTTP endpoint that serves them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from base.errors import FailedPrecondition, InvalidArgument

log = logging.getLogger("peapod.metrics")

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
)


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
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class ContainerMetrics:
    """What the container code reports, turned into metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def oom_killed(self) -> None:
        self._m.containers_oom.inc()

    def monitor_lost(self) -> None:
        self._m.containers_stopped_monitor.inc()

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

    def pull_finished(self, result: str) -> None:
        self._m.image_pulls.labels(result).inc()


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
