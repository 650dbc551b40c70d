"""The ``disk`` metric family: the filesystem holding a container's writable layer.

Size and inodes come from one ``statvfs`` of the layer's upper dir; the bytes the layer
uses come from the background walks (``LayerUsageLookup``) and carry the walk's time.
A layer no walk has reached yet (a container just created) is walked here, and reported
only if that walk finishes: a new layer is nearly empty. All such walks of one call
share one ``WalkBudget`` of about ``CALL_WALK_BUDGET`` entries (a directory's listing is
not split), so a call never waits on a big layer nor on many new ones; the layers
the budget does not reach get their figure from the background walks.
``device`` is ``/dev/<name>`` of the filesystem's block device, else its ``major:minor``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from oci.stats.layers import LayerUsage, TreeWalk
from oci.stats.metric_blkio import device_name

# container id -> its writable layer's last figure, None before a walk reached it
LayerUsageLookup = Callable[[str], LayerUsage | None]
CALL_WALK_BUDGET = 2000


class WalkBudget:
    """The directory entries the first walks of one call may still visit."""

    def __init__(self, entries: int = CALL_WALK_BUDGET) -> None:
        self.left = entries


def writable_layer_fs(
    ctr_id: str, upper_dir: str, layer_usage: LayerUsageLookup | None, budget: WalkBudget
) -> Iterator[tuple[str, tuple[str, ...], int, int]]:
    """(name, (device,), value, timestamp) of the four ``container_fs_*`` gauges; a layer
    without a figure is walked from ``budget`` (the call's)."""
    try:
        st = os.stat(upper_dir)
        vfs = os.statvfs(upper_dir)
    except OSError:
        return
    dev = (device_name(f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"),)
    yield "container_fs_limit_bytes", dev, vfs.f_blocks * vfs.f_frsize, 0
    yield "container_fs_inodes_total", dev, vfs.f_files, 0
    yield "container_fs_inodes_free", dev, vfs.f_ffree, 0
    usage = layer_usage(ctr_id) if layer_usage is not None else None
    if usage is None:
        usage = first_walk(upper_dir, budget)
    if usage is not None:
        yield "container_fs_usage_bytes", dev, usage.used_bytes, usage.timestamp


def first_walk(upper_dir: str, budget: WalkBudget) -> LayerUsage | None:
    """The layer's usage if a walk within what is left of ``budget`` covers it, else None;
    what the walk visited is taken from ``budget``."""
    if budget.left <= 0:
        return None
    walk = TreeWalk(upper_dir)
    budget.left -= walk.step(budget.left)
    if not walk.done:
        return None
    return LayerUsage(walk.used_bytes, walk.inodes_used, time.time_ns())
