"""The ``diskIO`` metric family: block I/O a container's cgroup caused, per device.

v1 reads ``blkio.throttle.io_service_bytes_recursive`` and ``..._io_serviced_recursive``
(``<major>:<minor> <Op> <n>`` lines); v2 reads ``io.stat`` (``<major>:<minor> rbytes=
wbytes= rios= wios= dbytes= dios=``). On v1 the kernel charges buffered writeback to the
root cgroup, so a container's writes may show only when they bypass the page cache.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cache

from oci.stats.cgroups import CgroupDirs, read_text
from oci.stats.metric_cgroup import Reading
from sandbox.cgroup_layout import V2

OPERATIONS = ("Read", "Write", "Discard")
_V2_KEYS = {"Read": ("rbytes", "rios"), "Write": ("wbytes", "wios"),
            "Discard": ("dbytes", "dios")}  # fmt: skip


def disk_io(dirs: CgroupDirs) -> Iterator[Reading]:
    """Bytes and operations read and written per device, and bytes per operation."""
    counts = _v2_counts(dirs) if dirs.version == V2 else _v1_counts(dirs)
    if counts is None:
        return
    for dev, ops in sorted(counts.items()):
        name = device_name(dev)
        major, _, minor = dev.partition(":")
        for op in OPERATIONS:
            if op not in ops:
                continue
            nbytes, nops = ops[op]
            yield "container_blkio_device_usage_total", (name, major, minor, op), nbytes
            if op == "Read":
                yield "container_fs_reads_bytes_total", (name,), nbytes
                yield "container_fs_reads_total", (name,), nops
            elif op == "Write":
                yield "container_fs_writes_bytes_total", (name,), nbytes
                yield "container_fs_writes_total", (name,), nops


Counts = dict[str, dict[str, tuple[int, int]]]  # "M:m" -> op -> (bytes, operations)


def _v1_counts(dirs: CgroupDirs) -> Counts | None:
    d = dirs.controller("blkio")
    if d is None:
        return None
    nbytes = read_text(f"{d}/blkio.throttle.io_service_bytes_recursive")
    nops = read_text(f"{d}/blkio.throttle.io_serviced_recursive")
    if nbytes is None or nops is None:
        return None
    ops_by_dev = _v1_table(nops)
    out: Counts = {}
    for dev, per_op in _v1_table(nbytes).items():
        out[dev] = {op: (n, ops_by_dev.get(dev, {}).get(op, 0)) for op, n in per_op.items()}
    return out


def _v1_table(text: str) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in OPERATIONS and parts[2].isdigit():
            table.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return table


def _v2_counts(dirs: CgroupDirs) -> Counts | None:
    text = read_text(f"{dirs.unified}/io.stat") if dirs.unified else None
    if text is None:
        return None
    out: Counts = {}
    for line in text.splitlines():
        dev, *fields = line.split()
        values = dict(f.partition("=")[::2] for f in fields)
        per_op = {}
        for op, (kb, ko) in _V2_KEYS.items():
            if values.get(kb, "").isdigit() and values.get(ko, "").isdigit():
                per_op[op] = (int(values[kb]), int(values[ko]))
        if per_op:
            out[dev] = per_op
    return out


@cache
def device_name(dev: str, sys_block: str = "/sys/dev/block") -> str:
    """``/dev/<name>`` of block device ``major:minor``, or ``major:minor`` if unknown."""
    try:
        return "/dev/" + os.path.basename(os.readlink(f"{sys_block}/{dev}"))
    except OSError:
        return dev
