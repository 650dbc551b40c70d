"""PodSandboxStatus and ListPodSandbox: answered from the in-memory index only."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from cri.call import require
from cri.handlers import sandbox_convert
from sandbox.record import SandboxRecord

if TYPE_CHECKING:
    from cri.daemon import Daemon


class _ItemCache:
    """The list item of each record snapshot, converted once.

    Records are immutable snapshots replaced on every change, so an item stays
    valid as long as the cached record *is* the current one.
    """

    def __init__(self) -> None:
        self._items: dict[str, tuple[SandboxRecord, pb.PodSandbox]] = {}
        self._lock = threading.Lock()

    def items(self, records: list[SandboxRecord], live: int) -> list[pb.PodSandbox]:
        out = []
        for rec in records:
            hit = self._items.get(rec.id)
            if hit is None or hit[0] is not rec:
                hit = (rec, sandbox_convert.to_pb_sandbox(rec))
                with self._lock:  # the pruning below iterates the dict
                    self._items[rec.id] = hit
            out.append(hit[1])
        if len(self._items) > 2 * live + 64:  # forget removed pods now and then
            with self._lock:
                keep = {r.id for r in records} if len(records) == live else set()
                self._items = {k: v for k, v in self._items.items() if k in keep}
        return out


_ITEMS = _ItemCache()


def pod_sandbox_status(
    d: Daemon, req: pb.PodSandboxStatusRequest, ctx: grpc.ServicerContext
) -> pb.PodSandboxStatusResponse:
    """State, IPs, metadata and namespace options of one pod; verbose adds an info map."""
    pod_id = require(req.pod_sandbox_id, "PodSandboxStatusRequest.pod_sandbox_id",
                     "the id RunPodSandbox returned")
    rec = d.pods.get(pod_id)
    info = sandbox_convert.verbose_info(rec) if req.verbose else {}
    return pb.PodSandboxStatusResponse(
        status=sandbox_convert.to_pb_status(rec), info=info, timestamp=time.time_ns()
    )


def list_pod_sandbox(
    d: Daemon, req: pb.ListPodSandboxRequest, ctx: grpc.ServicerContext
) -> pb.ListPodSandboxResponse:
    """Pods matching the filter (id or unique id prefix, state, labels)."""
    flt = sandbox_convert.sandbox_filter(req.filter) if req.HasField("filter") else None
    records = d.pods.list(flt)
    return pb.ListPodSandboxResponse(items=_ITEMS.items(records, len(d.pods.store.all())))
