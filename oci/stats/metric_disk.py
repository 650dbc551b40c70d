"""The ``disk`` metric family: the filesystem holding a container's writable layer.

Size and inodes come from one ``statvfs`` of the layer's upper dir; the bytes the layer
uses come from the background walks (``LayerUsageLookup``) and carry the walk's time.
A layer no walk has reached yet (a container just created) is walked here once, for about
``FIRST_WALK_BUDGET`` entries (a directory's listing is not split), and reported only
if that finishes: a new layer is
nearly empty, and a call never waits on a big one. ``device`` is ``/dev/<name>`` of the
filesystem's block device, else its ``major:minor``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from oci.stats.layers import LayerUsage, TreeWalk
from oci.stats.metric_blkio import device_name

# container id -> its writable layer's last figure, None before a walk reached it
LayerUsageLookup = Callable[[str], LayerUsage | None]
FIRST_WALK_BUDGET = 2000


def writable_layer_fs(
    ctr_id: str, upper_dir: str, layer_usage: LayerUsageLookup | None
) -> Iterator[tuple[str, tuple[str, ...], int, int]]:
    """(name, (device,), value, timestamp) of the four ``container_fs_*`` gauges."""
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
        usage = first_walk(upper_dir)
    if usage is not None:
        yield "container_fs_usage_bytes", dev, usage.used_bytes, usage.timestamp


def first_walk(upper_dir: str, budget: int = FIRST_WALK_BUDGET) -> LayerUsage | None:
    """The layer's usage if one walk of at most ``budget`` entries covers it, else None."""
    walk = TreeWalk(upper_dir)
    walk.step(budget)
    if not walk.done:
        return None
    return LayerUsage(walk.used_bytes, walk.inodes_used, time.time_ns())
