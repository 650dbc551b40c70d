"""The NRI runtime: plugins come and go, are synchronized, and are called in index order.

Plugins come from the plugin directories (started with the daemon) and from the
socket. Each one registers, is configured, then synchronized with every pod and
container (``nri.gate`` makes sure none is missed while it joins) and from then on
gets the events it subscribed to, in order of index, then name. Hooks of different
pods and containers run concurrently; a plugin gets calls in parallel, as over
ttrpc from containerd.

Faults: a plugin that hangs up or breaks the protocol is dropped; one that does not
answer within ``request_timeout`` is disconnected and the call proceeds without it,
or fails if ``fail_on_timeout``; one that answers with an error fails the call if
the event may be refused (RunPodSandbox, CreateContainer, StartContainer,
UpdateContainer), else the error is logged. Each drop is logged with the plugin's name
and the reason.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message

from api import nri_pb2
from base.cancel import CallContext
from base.errors import DeadlineExceeded, FailedPrecondition, PeapodError
from nri import events
from nri.adjust import Invalid, NodeSupport, Unsupported
from nri.convert import bare_pod, container_message, pod_message
from nri.gate import SyncGate
from nri.launcher import discover, spawn
from nri.listener import Listener
from nri.owners import Conflict, Owners
from nri.plugin import Plugin, PluginGone, PluginRefused, PluginTimedOut
from nri.settings import NRISettings
from nri.sync import synchronize
from nri.ttrpc import FAILED_PRECONDITION, CallFailed
from nri.updates import UpdateSet
from oci.container.manager import ContainerManager
from oci.container.record import ContainerRecord
from sandbox.manager import PodManager

log = logging.getLogger("peapod.nri")

R = TypeVar("R", bound=Message)
UPDATE_TIMEOUT = 30.0  # seconds one plugin-requested update or eviction may take
EVENT_WORKERS = 4  # threads delivering events nobody waits for (exits, clean-ups)


class NRIObserver(Protocol):
    """Receives what happens to plugin calls (the daemon turns it into metrics)."""

    def call_finished(self, plugin: str, method: str, seconds: float) -> None: ...

    def plugin_dropped(self, plugin: str) -> None: ...


class _NoObserver:
    def call_finished(self, plugin: str, method: str, seconds: float) -> None:
        pass

    def plugin_dropped(self, plugin: str) -> None:
        pass


class NRIRuntime:
    """Every plugin of the daemon, and the calls to them."""

    def __init__(self, settings: NRISettings, pods: PodManager, containers: ContainerManager,
                 node: NodeSupport, observer: NRIObserver | None = None) -> None:
        self.settings = settings
        self.observer: NRIObserver = observer or _NoObserver()
        self.pods = pods
        self.containers = containers
        self.node = node
        self.gate = SyncGate()
        self._plugins: list[Plugin] = []
        self._lock = threading.Lock()
        self._closing = False
        self._listener = (Listener(settings.socket_path, settings.socket_mode, self._accept)
                          if settings.socket_path else None)
        self._later = ThreadPoolExecutor(EVENT_WORKERS, thread_name_prefix="nri-event")
        self._local = threading.local()  # .applying: updates plugins asked for are under way

    # ---- start and stop ------------------------------------------------------
    def start(self) -> None:
        """Start the plugin directories' plugins (synchronized), then serve the socket."""
        threads = []
        for found in discover(self.settings.plugin_dirs, self.settings.plugin_config_dir):
            try:
                proc, sock = spawn(found)
            except OSError as exc:
                log.warning("cannot start NRI plugin", extra={
                    "plugin": f"{found.idx}-{found.base}", "error": exc.strerror or str(exc)})
                continue
            plugin = Plugin(sock, self, idx=found.idx, base=found.base, config=found.config,
                            process=proc)
            log.info("NRI plugin started", extra={"plugin": plugin.name, "pid": proc.pid})
            thread = threading.Thread(target=self.admit, args=(plugin,), daemon=True,
                                      name=f"nri-admit-{plugin.name}")
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        if self._listener is not None:
            self._listener.start()

    def close(self) -> None:
        """Stop accepting, disconnect every plugin (stopping those peapod started)."""
        self._closing = True
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            plugins = list(self._plugins)
        for plugin in plugins:
            plugin.close("peapod is shutting down")
        self._later.shutdown(wait=False, cancel_futures=True)

    # ---- joining ---------------------------------------------------------------
    def _accept(self, sock: Any) -> None:
        plugin = Plugin(sock, self)
        threading.Thread(target=self.admit, args=(plugin,), daemon=True,
                         name="nri-admit").start()

    def admit(self, plugin: Plugin) -> None:
        """Register, configure and synchronize ``plugin``; a failure drops it (logged)."""
        if self._closing:
            plugin.close("peapod is shutting down")
            return
        try:
            plugin.handshake(self.settings)
        except PluginGone:
            return  # plugin_closed logged why
        with self.gate.snapshot():
            pods = self.pods.store.all()
            ctrs = self.containers.store.visible()
            with self._lock:
                if plugin.closed:
                    return
                self._plugins.append(plugin)
                self._plugins.sort(key=lambda p: (p.idx, p.base))
        started = time.monotonic()
        try:
            updates = synchronize(plugin, [pod_message(p) for p in pods],
                                  [container_message(c, self.spec(c)) for c in ctrs],
                                  self.settings.registration_timeout)
        except PluginRefused as exc:
            plugin.close(f"Synchronize failed: {exc}")
            return
        except PluginGone:
            return
        finally:
            self.observer.call_finished(plugin.name, "Synchronize", time.monotonic() - started)
        plugin.mark_ready()
        log.info("NRI plugin synchronized", extra={
            "plugin": plugin.name, "kind": plugin.kind, "pods": len(pods),
            "containers": len(ctrs), "events": ",".join(events.names(plugin.events))})
        if updates:
            try:
                self.apply(self.collect(updates, plugin.name), [])
            except PeapodError as exc:
                log.warning("NRI plugin's updates after Synchronize failed",
                            extra={"plugin": plugin.name, "error": exc.message})

    def plugin_closed(self, plugin: Plugin, reason: str) -> None:
        with self._lock:
            if plugin in self._plugins:
                self._plugins.remove(plugin)
        quiet = (plugin.process is None and plugin.hung_up and not plugin.conn.busy_at_close)
        if self._closing or quiet:  # shutting down, or it left between calls
            log.info("NRI plugin disconnected", extra={"plugin": plugin.name, "reason": reason})
        else:
            log.warning("NRI plugin dropped", extra={"plugin": plugin.name, "reason": reason,
                                                     "pid": plugin.pid})
            self.observer.plugin_dropped(plugin.name)

    # ---- calling ---------------------------------------------------------------
    def targets(self, event: int) -> list[Plugin]:
        """The plugins to call for ``event``, in order; waits for ones still synchronizing."""
        with self._lock:
            candidates = [p for p in self._plugins if p.subscribed(event)]
        out = []
        for plugin in candidates:
            if not plugin.ready.is_set():
                plugin.settled.wait(self.settings.registration_timeout)
            if plugin.ready.is_set() and not plugin.closed:
                out.append(plugin)
        return out

    def send(self, plugin: Plugin, event: int, req: Message, resp_type: type[R],
             pod: nri_pb2.PodSandbox, ctr: nri_pb2.Container | None = None) -> R | None:
        """``plugin``'s answer to ``event``; None if it is gone (dropped) meanwhile.

        PluginRefused if it answered with an error; DeadlineExceeded if it timed out and
        timeouts fail calls.
        """
        started = time.monotonic()
        try:
            return plugin.event(event, req, resp_type, self.settings.request_timeout, pod, ctr)
        except PluginTimedOut:
            if self.settings.fail_on_timeout:
                raise DeadlineExceeded(
                    f"NRI plugin {plugin.name} did not answer {events.METHODS[event]} within "
                    f"{self.settings.request_timeout:g} s and was disconnected") from None
            return None
        except PluginGone:
            return None
        finally:
            self.observer.call_finished(plugin.name, events.METHODS[event],
                                        time.monotonic() - started)

    def refusable(self, plugin: Plugin, event: int, req: Message, resp_type: type[R],
                  pod: nri_pb2.PodSandbox, ctr: nri_pb2.Container | None = None) -> R | None:
        """``send`` for an event a plugin may refuse: its error fails the call."""
        try:
            return self.send(plugin, event, req, resp_type, pod, ctr)
        except PluginRefused as exc:
            raise FailedPrecondition(
                f"NRI plugin {plugin.name} failed {events.METHODS[event]}: {exc}") from None

    def notify(self, event: int, req: Message, resp_type: type[R], pod: nri_pb2.PodSandbox,
               ctr: nri_pb2.Container | None = None) -> list[tuple[Plugin, R]]:
        """``event`` to every subscriber, errors logged; the answers of those that gave one."""
        out = []
        for plugin in self.targets(event):
            try:
                resp = self.send(plugin, event, req, resp_type, pod, ctr)
            except (PluginRefused, DeadlineExceeded) as exc:
                self.plugin_error(plugin.name, events.METHODS[event], str(exc))
                continue
            if resp is not None:
                out.append((plugin, resp))
        return out

    @staticmethod
    def plugin_error(plugin: str, event: str, error: str) -> None:
        log.warning("NRI plugin failed an event", extra={"plugin": plugin, "event": event,
                                                         "error": error})

    def later(self, work: Any, *args: Any) -> None:
        """Run ``work(*args)`` on an event thread (nobody waits for it)."""
        if self._closing:
            return
        with contextlib.suppress(RuntimeError):  # shutting down
            self._later.submit(self._logged, work, *args)

    @staticmethod
    def _logged(work: Any, *args: Any) -> None:
        try:
            work(*args)
        except Exception:
            log.exception("delivering an NRI event failed")

    # ---- what plugins see ------------------------------------------------------
    def pod(self, pod_id: str) -> nri_pb2.PodSandbox:
        rec = self.pods.store.get(pod_id)
        return pod_message(rec) if rec is not None else bare_pod(pod_id)

    def spec(self, rec: ContainerRecord) -> dict[str, Any] | None:
        try:
            return self.containers.spec(rec)
        except PeapodError:
            return None

    def container(self, rec: ContainerRecord) -> nri_pb2.Container:
        current = self.containers.store.get(rec.id) or rec
        return container_message(current, self.spec(current))

    # ---- updates and evictions plugins ask for -------------------------------------
    def collect(self, updates: list[nri_pb2.ContainerUpdate], plugin: str,
                owners: Owners | None = None) -> UpdateSet:
        """One plugin's updates; FailedPrecondition if they conflict or cannot be made."""
        found = UpdateSet(owners or Owners())
        try:
            found.add(updates, plugin)
        except (Conflict, Unsupported, Invalid) as exc:
            raise FailedPrecondition(f"NRI plugin {plugin}'s container updates: {exc}") from None
        return found

    @property
    def applying(self) -> bool:
        """Whether this thread applies updates plugins asked for (no UpdateContainer event)."""
        return bool(getattr(self._local, "applying", False))

    def apply(self, updates: UpdateSet,
              evictions: list[tuple[str, nri_pb2.ContainerEviction]]) -> list[str]:
        """Make the updates, then the evictions; the ids whose update failed.

        A failed update a plugin did not mark ``ignore_failure`` raises FailedPrecondition
        (after the rest was tried).
        """
        failed: list[str] = []
        fatal: list[str] = []
        self._local.applying = True
        try:
            for pending in updates.by_container.values():
                ctx = CallContext.with_timeout(UPDATE_TIMEOUT, "NRI container update")
                try:
                    self.containers.update_resources(pending.container_id, pending.resources, ctx)
                except PeapodError as exc:
                    failed.append(pending.container_id)
                    log.warning("container update an NRI plugin asked for failed", extra={
                        "plugin": ",".join(pending.plugins), "container": pending.container_id,
                        "error": exc.message})
                    if not pending.ignore_failure:
                        fatal.append(f"{pending.container_id[:12]}: {exc.message}")
        finally:
            self._local.applying = False
        for plugin, eviction in evictions:
            self.evict(plugin, eviction)
        if fatal:
            raise FailedPrecondition("container updates NRI plugins asked for failed: "
                                     + "; ".join(fatal))
        return failed

    def evict(self, plugin: str, eviction: nri_pb2.ContainerEviction) -> None:
        """Stop a container a plugin evicts (at once, as a kill)."""
        log.warning("NRI plugin evicts a container", extra={
            "plugin": plugin, "container": eviction.container_id, "reason": eviction.reason})
        try:
            self.containers.stop(eviction.container_id, 0,
                                 CallContext.with_timeout(UPDATE_TIMEOUT, "NRI eviction"))
        except PeapodError as exc:
            log.warning("evicting a container failed", extra={
                "plugin": plugin, "container": eviction.container_id, "error": exc.message})

    def update_containers(self, plugin: Plugin,
                          req: nri_pb2.UpdateContainersRequest) -> nri_pb2.UpdateContainersResponse:
        """A plugin's own UpdateContainers call."""
        log.info("NRI plugin asks for container updates", extra={
            "plugin": plugin.name, "updates": len(req.update), "evictions": len(req.evict)})
        try:
            updates = self.collect(list(req.update), plugin.name)
        except FailedPrecondition as exc:
            raise CallFailed(FAILED_PRECONDITION, exc.message) from None
        try:
            failed = set(self.apply(updates, [(plugin.name, e) for e in req.evict]))
        except FailedPrecondition as exc:
            failed = {u.container_id for u in req.update}
            log.warning("NRI plugin's UpdateContainers failed", extra={
                "plugin": plugin.name, "error": exc.message})
        return nri_pb2.UpdateContainersResponse(
            failed=[u for u in req.update if u.container_id in failed])

    # ---- status ------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """For Status: the socket and every plugin with its subscriptions."""
        with self._lock:
            plugins = list(self._plugins)
        listener = self._listener
        return {
            "enabled": True,
            "socket": str(listener.path) if listener is not None and listener.serving else "",
            "socket_problem": listener.problem if listener is not None else "",
            "plugins": [{"name": p.name, "index": p.idx, "kind": p.kind, "pid": p.pid,
                         "ready": p.ready.is_set(), "events": events.names(p.events)}
                        for p in plugins],
        }
