"""The Stream* list rpcs' replies: a list cut into messages of a few items each."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

# Items per message: a Container or PodSandbox is 1-2 KB on the wire, so a message
# stays far below the 16 MiB a kubelet accepts while the stream stays short.
BATCH = 500


def batches(items: Sequence[T], size: int = 0) -> Iterator[Sequence[T]]:
    """``items`` in order, ``size`` (default ``BATCH``) at a time; nothing for an empty list."""
    step = max(1, size or BATCH)
    for start in range(0, len(items), step):
        yield items[start : start + step]
