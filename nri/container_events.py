"""Container events for NRI plugins (``oci.container.hooks.ContainerHooks``).

CreateContainer goes to each subscriber in turn, each seeing the container as the
plugins before it adjusted it; their adjustments are applied to the OCI spec
(``nri.adjust``), conflicts between plugins and what peapod cannot honour fail the
call (a plugin asking for the latter is also disconnected). Validator plugins then
see the result and may reject it. Updates and evictions of other containers that
plugins ask for are made before the call returns. StartContainer and UpdateContainer
may be refused too; the Post* events, StopContainer (once per container, however it
stopped) and RemoveContainer only log errors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from typing import Any

from api import nri_pb2
from base.errors import FailedPrecondition
from nri import events
from nri.adjust import Invalid, SpecAdjuster, Unsupported
from nri.convert import container_message, cri_resources_message
from nri.owners import Conflict, Owners
from nri.runtime import NRIRuntime
from nri.updates import UpdateSet, merge_resources
from oci.container.record import ContainerRecord
from oci.spec.inputs import Resources


class ContainerEvents:
    """The container hooks, sending NRI events through ``runtime``."""

    def __init__(self, runtime: NRIRuntime) -> None:
        self.runtime = runtime
        self._stops: dict[str, Future[None]] = {}  # container id -> its StopContainer
        self._lock = threading.Lock()

    @contextmanager
    def creation(self) -> Iterator[None]:
        with self.runtime.gate.admission():
            yield

    # ---- create ----------------------------------------------------------------
    def create(self, rec: ContainerRecord, spec: dict[str, Any]) -> dict[str, Any]:
        rt = self.runtime
        targets = rt.targets(events.CREATE)
        validators = rt.targets(events.VALIDATE)
        if not targets and not validators:
            return spec
        pod = rt.pod(rec.sandbox_id)  # the build's own spec: changed in place
        annotations = dict(rec.annotations)
        owners = Owners()
        adjuster = SpecAdjuster(rec.id, spec, annotations, owners, rt.node)
        pristine = self._shown(rec, spec, annotations)
        merged = nri_pb2.ContainerAdjustment()
        updates = UpdateSet(owners)
        evictions: list[tuple[str, nri_pb2.ContainerEviction]] = []
        for plugin in targets:
            ctr = self._shown(rec, spec, annotations)
            resp = rt.refusable(plugin, events.CREATE,
                                nri_pb2.CreateContainerRequest(pod=pod, container=ctr),
                                nri_pb2.CreateContainerResponse, pod, ctr)
            if resp is None:
                continue
            try:
                adjuster.apply(resp.adjust, plugin.name)
                updates.add(list(resp.update), plugin.name, forbid=rec.id)
            except Conflict as exc:
                raise FailedPrecondition(f"NRI plugins conflict: {exc}") from None
            except (Unsupported, Invalid) as exc:
                plugin.close(f"asked for an adjustment peapod cannot honour: {exc}")
                raise FailedPrecondition(
                    f"NRI plugin {plugin.name} asked for {exc}, which peapod cannot honour; "
                    "the plugin was disconnected") from None
            merged.MergeFrom(resp.adjust)
            evictions += [(plugin.name, e) for e in resp.evict]
        self._validate(validators, targets, pod, pristine, merged, updates, owners)
        if updates.by_container or evictions:
            rt.apply(updates, evictions)
        return spec

    @staticmethod
    def _shown(rec: ContainerRecord, spec: dict[str, Any],
               annotations: dict[str, str]) -> nri_pb2.Container:
        ctr = container_message(rec, spec)
        ctr.annotations.clear()
        ctr.annotations.update(annotations)
        return ctr

    def _validate(self, validators: list[Any], consulted: list[Any], pod: nri_pb2.PodSandbox,
                  ctr: nri_pb2.Container, merged: nri_pb2.ContainerAdjustment,
                  updates: UpdateSet, owners: Owners) -> None:
        if not validators:
            return
        req = nri_pb2.ValidateContainerAdjustmentRequest(
            pod=pod, container=ctr, adjust=merged, update=updates.messages(),
            owners=owners.message(),
            plugins=[nri_pb2.PluginInstance(name=p.base, index=p.idx) for p in consulted])
        for plugin in validators:
            resp = self.runtime.refusable(plugin, events.VALIDATE, req,
                                          nri_pb2.ValidateContainerAdjustmentResponse, pod, ctr)
            if resp is not None and resp.reject:
                raise FailedPrecondition(
                    f"NRI validator {plugin.name} rejected the container's adjustments: "
                    f"{resp.reason or 'no reason given'}")

    def abandoned(self, rec: ContainerRecord) -> None:
        self.runtime.later(self._removed, rec)

    def post_create(self, rec: ContainerRecord) -> None:
        self._notify(events.POST_CREATE, rec, nri_pb2.PostCreateContainerRequest,
                     nri_pb2.PostCreateContainerResponse)

    # ---- start -------------------------------------------------------------------
    def start(self, rec: ContainerRecord) -> None:
        rt = self.runtime
        targets = rt.targets(events.START)
        if not targets:
            return
        pod, ctr = rt.pod(rec.sandbox_id), rt.container(rec)
        req = nri_pb2.StartContainerRequest(pod=pod, container=ctr)
        for plugin in targets:
            rt.refusable(plugin, events.START, req, nri_pb2.StartContainerResponse, pod, ctr)

    def post_start(self, rec: ContainerRecord) -> None:
        self._notify(events.POST_START, rec, nri_pb2.PostStartContainerRequest,
                     nri_pb2.PostStartContainerResponse)

    # ---- update --------------------------------------------------------------------
    def update(self, rec: ContainerRecord, res: Resources) -> Resources:
        rt = self.runtime
        if rt.applying:
            return res  # an update a plugin asked for: no event, as upstream
        targets = rt.targets(events.UPDATE)
        if not targets:
            return res
        pod, ctr = rt.pod(rec.sandbox_id), rt.container(rec)
        owners = Owners()
        others = UpdateSet(owners)
        evictions: list[tuple[str, nri_pb2.ContainerEviction]] = []
        for plugin in targets:
            req = nri_pb2.UpdateContainerRequest(pod=pod, container=ctr,
                                                 linux_resources=cri_resources_message(res))
            resp = rt.refusable(plugin, events.UPDATE, req, nri_pb2.UpdateContainerResponse,
                                pod, ctr)
            if resp is None:
                continue
            try:
                for u in resp.update:
                    if u.container_id == rec.id:
                        res = merge_resources(res, u.linux.resources, rec.id, plugin.name, owners)
                    else:
                        others.add([u], plugin.name)
            except Conflict as exc:
                raise FailedPrecondition(f"NRI plugins conflict: {exc}") from None
            except (Unsupported, Invalid) as exc:
                plugin.close(f"asked for an update peapod cannot make: {exc}")
                raise FailedPrecondition(
                    f"NRI plugin {plugin.name} asked for {exc}, which peapod cannot do; the "
                    "plugin was disconnected") from None
            evictions += [(plugin.name, e) for e in resp.evict]
        if others.by_container or evictions:
            rt.apply(others, evictions)
        return res

    def post_update(self, rec: ContainerRecord) -> None:
        if not self.runtime.applying:
            self._notify(events.POST_UPDATE, rec, nri_pb2.PostUpdateContainerRequest,
                         nri_pb2.PostUpdateContainerResponse)

    # ---- stop and remove ------------------------------------------------------------
    def stopped(self, rec: ContainerRecord, wait: bool) -> None:
        with self._lock:
            done = self._stops.get(rec.id)
            first = done is None
            if done is None:
                done = self._stops[rec.id] = Future()
        if first:
            if wait:
                self._deliver_stop(rec, done)
            else:
                self.runtime.later(self._deliver_stop, rec, done)
        elif wait:
            with suppress(FutureTimeout):  # each plugin has its own timeout; this is a bound
                done.result(self.runtime.settings.request_timeout * 8)

    def _deliver_stop(self, rec: ContainerRecord, done: Future[None]) -> None:
        rt = self.runtime
        try:
            if not rt.targets(events.STOP):
                return
            pod, ctr = rt.pod(rec.sandbox_id), rt.container(rec)
            answers = rt.notify(events.STOP, nri_pb2.StopContainerRequest(pod=pod, container=ctr),
                                nri_pb2.StopContainerResponse, pod, ctr)
            updates = UpdateSet(Owners())
            for plugin, resp in answers:
                try:
                    updates.add(list(resp.update), plugin.name)
                except (Conflict, Unsupported, Invalid) as exc:
                    rt.plugin_error(plugin.name, "StopContainer", str(exc))
            if updates.by_container:
                rt.apply(updates, [])
        finally:
            done.set_result(None)

    def remove(self, rec: ContainerRecord) -> None:
        self.stopped(rec, wait=True)
        self._removed(rec)

    def _removed(self, rec: ContainerRecord) -> None:
        try:
            self._notify(events.REMOVE, rec, nri_pb2.RemoveContainerRequest,
                         nri_pb2.RemoveContainerResponse)
        finally:
            with self._lock:
                self._stops.pop(rec.id, None)

    def _notify(self, event: int, rec: ContainerRecord, req_type: Any, resp_type: Any) -> None:
        rt = self.runtime
        if not rt.targets(event):
            return
        pod, ctr = rt.pod(rec.sandbox_id), rt.container(rec)
        rt.notify(event, req_type(pod=pod, container=ctr), resp_type, pod, ctr)
