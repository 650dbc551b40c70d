"""Synchronize: a plugin gets every existing pod and container, split if too big.

One SynchronizeRequest holds at most ttrpc's 4 MiB; a bigger state goes in parts,
every part but the last flagged ``more``, and the plugin must answer each of those
with ``more`` and no updates. Its answer to the last part holds its updates.
"""

from __future__ import annotations

from api import nri_pb2
from nri.plugin import Plugin, PluginRefused
from nri.ttrpc import MAX_DATA

PART_LIMIT = MAX_DATA - (64 << 10)  # room for the envelope
ITEM_OVERHEAD = 8  # field tag and length of one repeated item, at most


def parts(pods: list[nri_pb2.PodSandbox], containers: list[nri_pb2.Container],
          limit: int = PART_LIMIT) -> list[nri_pb2.SynchronizeRequest]:
    """The requests that carry ``pods`` and ``containers``, each within ``limit`` bytes."""
    out = [nri_pb2.SynchronizeRequest()]
    size = 0
    for kind, items in (("pods", pods), ("containers", containers)):
        for item in items:
            grow = item.ByteSize() + ITEM_OVERHEAD
            if size and size + grow > limit:
                out[-1].more = True
                out.append(nri_pb2.SynchronizeRequest())
                size = 0
            getattr(out[-1], kind).append(item)
            size += grow
    return out


def synchronize(plugin: Plugin, pods: list[nri_pb2.PodSandbox],
                containers: list[nri_pb2.Container], timeout: float,
                limit: int = PART_LIMIT) -> list[nri_pb2.ContainerUpdate]:
    """Synchronize ``plugin``; the updates it asks for. PluginGone or PluginRefused."""
    requests = parts(pods, containers, limit)
    for req in requests[:-1]:
        resp = plugin.call("Synchronize", req, nri_pb2.SynchronizeResponse, timeout)
        if resp.update or not resp.more:
            raise PluginRefused("it does not take Synchronize in parts")
    resp = plugin.call("Synchronize", requests[-1], nri_pb2.SynchronizeResponse, timeout)
    return list(resp.update)
