"""A pod's CNI networking: choosing the network, ADD on creation, DEL on teardown.

Every pod with its own network namespace gets the configured network (ifname
``eth0``); its ``lo`` is brought up when the namespace is made
(``sandbox.namespaces``), so no CNI call is spent on it. The network is chosen
afresh for each pod from the config directory (lexical order, first valid file,
or the configured name). What was attached is recorded per network as
``cni.Attachment`` dicts, so DEL later runs with exactly the config and
arguments ADD used, even after a restart or a config change. Records written
before lo stopped being a CNI network still list the built-in loopback network
first; its DEL runs like any other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from base.cancel import CallContext
from base.errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    NotFound,
    PeapodError,
)
from cni import (
    Attachment,
    CNIClient,
    NetworkConfig,
    PortMapping,
    RuntimeConf,
    bandwidth,
    k8s_args,
    load_network_dir,
    plugin_failure,
    port_mappings,
)
from cni.capabilities import BANDWIDTH, PORT_MAPPINGS
from sandbox.pod_config import PodMetadata

log = logging.getLogger("peapod.network")

LOOPBACK_IFNAME = "lo"  # the built-in loopback network of older records
POD_IFNAME = "eth0"
READY_CACHE_SECONDS = 1.0
_WAIT_STEP = 0.25


class NetworkObserver(Protocol):
    """Receives network events (the daemon turns them into metrics)."""

    def setup_finished(self, seconds: float) -> None: ...
    def teardown_finished(self, seconds: float) -> None: ...
    def plugin_failed(self, plugin: str) -> None: ...


class NullObserver:
    def setup_finished(self, seconds: float) -> None:
        pass

    def teardown_finished(self, seconds: float) -> None:
        pass

    def plugin_failed(self, plugin: str) -> None:
        pass


def failed_plugin(err: PeapodError) -> str:
    """The plugin an error from the CNI client is about ("" for others)."""
    failure = plugin_failure(err)
    if failure is not None:
        return failure.plugin
    return err.reason if err.reason not in ("", "netconf", "runtime_conf", "attachment") else ""


class PodNetwork:
    """Picks the network and runs ADD/DEL for pods."""

    def __init__(
        self,
        client: CNIClient,
        network_dir: str,
        default_network: str = "",
        wait_for_config: float = 10.0,
        observer: NetworkObserver | None = None,
    ) -> None:
        self.client = client
        self.network_dir = network_dir
        self.default_network = default_network
        self.wait_for_config = wait_for_config
        self.observer: NetworkObserver = observer or NullObserver()
        self._ready_lock = threading.Lock()
        self._ready_cache: tuple[float, tuple[bool, str, str]] | None = None

    # ---- choosing the network -------------------------------------------
    def current(self, ctx: CallContext) -> NetworkConfig:
        """The network pods attach to now; raises if none is usable."""
        network = load_network_dir(self.network_dir).pick(self.default_network or None)
        self.client.status(network, ctx)
        return network

    def ready(self) -> tuple[bool, str, str]:
        """(ready, reason, message) for the NetworkReady condition; cached for a second."""
        now = time.monotonic()
        with self._ready_lock:
            cached = self._ready_cache
            if cached is not None and now - cached[0] < READY_CACHE_SECONDS:
                return cached[1]
            try:
                network = self.current(CallContext.with_timeout(10, "CNI status"))
                answer = (True, "", f"network {network.name!r} from {network.source} is ready")
            except PeapodError as exc:
                answer = (False, "NetworkPluginNotReady", f"Network plugin returns error: "
                          f"{exc.message}")
            self._ready_cache = (time.monotonic(), answer)
            return answer

    def wait_ready(self, ctx: CallContext) -> NetworkConfig:
        """The current network, waiting up to ``wait_for_config`` seconds for one."""
        deadline = time.monotonic() + self.wait_for_config
        while True:
            try:
                return self.current(ctx)
            except (Cancelled, DeadlineExceeded):
                raise
            except PeapodError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    waited = f" after waiting {self.wait_for_config:g}s" if (
                        self.wait_for_config > 0) else ""
                    # A configured network name that is absent is a setup problem too.
                    cls = FailedPrecondition if isinstance(exc, NotFound) else type(exc)
                    raise cls(
                        f"pod network is not ready{waited}: {exc.message}", reason=exc.reason
                    ) from exc
                ctx.wait(min(_WAIT_STEP, left))

    # ---- attaching ------------------------------------------------------
    def plan(
        self,
        network: NetworkConfig,
        pod_id: str,
        netns: str,
        metadata: PodMetadata,
        mappings: Iterable[PortMapping] = (),
        rates: tuple[int | None, int | None] = (None, None),
    ) -> list[tuple[NetworkConfig, RuntimeConf]]:
        """The (network, runtime conf) pairs to ADD: the pod's network, ifname eth0."""
        args = k8s_args(metadata.namespace, metadata.name, pod_id, metadata.uid)
        caps: dict[str, Any] = {}
        maps = port_mappings(mappings)
        if maps:
            caps[PORT_MAPPINGS] = maps
        shaping = bandwidth(ingress_rate=rates[0], egress_rate=rates[1])
        if shaping:
            caps[BANDWIDTH] = shaping
        main = RuntimeConf(pod_id, netns, POD_IFNAME, list(args), caps)
        main.validate()
        return [(network, main)]

    def attach(self, network: NetworkConfig, runtime: RuntimeConf, ctx: CallContext) -> Attachment:
        """ADD one network; the error names plugin, code and message."""
        try:
            return self.client.add(network, runtime, ctx)
        except PeapodError as exc:
            self._count_failure(exc)
            if isinstance(exc, NotFound):  # CNI code 3 is about the netns, not the request
                raise Internal(exc.message, reason=exc.reason) from exc
            raise

    def timed_setup(self, started: float) -> None:
        self.observer.setup_finished(time.monotonic() - started)

    def detach_all(self, entries: list[Mapping[str, Any]], ctx: CallContext) -> None:
        """DEL every recorded attachment, newest first; raises the first failure."""
        started = time.monotonic()
        errors: list[PeapodError] = []
        for entry in reversed(entries):
            try:
                self.client.delete(delete_target(entry), ctx)
            except PeapodError as exc:
                self._count_failure(exc)
                errors.append(exc)
        if errors:
            if len(errors) == 1:
                raise errors[0]
            first = errors[0]
            raise type(first)("; ".join(e.message for e in errors), reason=first.reason)
        self.observer.teardown_finished(time.monotonic() - started)

    def _count_failure(self, exc: PeapodError) -> None:
        plugin = failed_plugin(exc)
        if plugin:
            self.observer.plugin_failed(plugin)


def pending_entry(network: NetworkConfig, runtime: RuntimeConf) -> dict[str, Any]:
    """A recorded attachment whose ADD has not finished (DEL needs no result)."""
    return {"format": "peapod.cni.attachment/v1", "network": network.to_dict(),
            "runtime": runtime.to_dict(), "result": None}


def delete_target(
    entry: Mapping[str, Any],
) -> Attachment | tuple[NetworkConfig, RuntimeConf, None]:
    """What ``CNIClient.delete`` needs for a recorded attachment."""
    if entry.get("result") is not None:
        return Attachment.from_dict(dict(entry))
    try:
        return (NetworkConfig.from_dict(entry["network"]),
                RuntimeConf.from_dict(entry["runtime"]), None)
    except (KeyError, TypeError, ValueError) as exc:
        raise FailedPrecondition(f"recorded CNI attachment is unusable: {exc}") from exc


def pod_ips(entries: list[Mapping[str, Any]]) -> list[str]:
    """The pod's addresses from its recorded attachments (primary first)."""
    ips: list[str] = []
    for entry in entries:
        if entry.get("result") is None:
            continue
        if entry.get("runtime", {}).get("ifname") == LOOPBACK_IFNAME:
            continue
        for ip in Attachment.from_dict(dict(entry)).pod_ips():
            if ip not in ips:
                ips.append(ip)
    return ips
