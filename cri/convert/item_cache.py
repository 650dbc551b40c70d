"""List items converted once per record snapshot (ListPodSandbox, ListContainers).

Records are immutable snapshots replaced on every change, so a converted item stays
valid as long as the cached record *is* the current one. At 100 containers this took
ListContainers from 1.24 to 0.82 ms round trip (tests/bench/compare.py, scenario 5).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class _Record(Protocol):
    @property
    def id(self) -> str: ...


R = TypeVar("R", bound=_Record)
M = TypeVar("M")


class ItemCache(Generic[R, M]):
    """``convert(record)`` memoised by record identity; removed records are forgotten."""

    def __init__(self, convert: Callable[[R], M]) -> None:
        self._convert = convert
        self._items: dict[str, tuple[R, M]] = {}
        self._lock = threading.Lock()

    def items(self, records: list[R], live: int) -> list[M]:
        """The items of ``records``; ``live`` is how many records exist in all."""
        out = []
        for rec in records:
            hit = self._items.get(rec.id)
            if hit is None or hit[0] is not rec:
                hit = (rec, self._convert(rec))
                with self._lock:  # the pruning below iterates the dict
                    self._items[rec.id] = hit
            out.append(hit[1])
        if len(self._items) > 2 * live + 64:  # forget removed records now and then
            with self._lock:
                keep = {r.id for r in records} if len(records) == live else set()
                self._items = {k: v for k, v in self._items.items() if k in keep}
        return out
