"""List items converted once per record snapshot (ListPodSandbox, ListContainers).

Records are immutable snapshots replaced on every change, so a converted item stays
valid as long as the cached record *is* the current one. At 100 containers this took
ListContainers from 1.24 to 0.82 ms round trip (tests/bench/compare.py, scenario 5).
An item is also kept in protobuf's wire format once a reply needed it so
(``encoded``), so a reply is put together without building or serializing messages.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from cri.convert.wire import field


class _Record(Protocol):
    @property
    def id(self) -> str: ...


class _Message(Protocol):
    def SerializeToString(self) -> bytes: ...


R = TypeVar("R", bound=_Record)
M = TypeVar("M")


class _Entry(Generic[R, M]):
    __slots__ = ("frame", "item", "record")

    def __init__(self, record: R, item: M) -> None:
        self.record = record
        self.item = item
        self.frame = (0, b"")  # (field number, the item encoded as that field); 0: none yet


class ItemCache(Generic[R, M]):
    """``convert(record)`` memoised by record identity; removed records are forgotten."""

    def __init__(self, convert: Callable[[R], M]) -> None:
        self._convert = convert
        self._items: dict[str, _Entry[R, M]] = {}
        self._lock = threading.Lock()

    def items(self, records: list[R], live: int) -> list[M]:
        """The items of ``records``; ``live`` is how many records exist in all."""
        return [e.item for e in self._entries(records, live)]

    def encoded(self, records: list[R], live: int, number: int) -> bytes:
        """The items of ``records`` in wire format as repeated message field ``number``.

        The items must be protobuf messages. Joined with the reply's other fields (if
        any), this is the reply's wire format.
        """
        out = []
        for e in self._entries(records, live):
            frame = e.frame
            if frame[0] != number:
                item: _Message = e.item  # type: ignore[assignment]
                frame = e.frame = (number, field(number, item.SerializeToString()))
            out.append(frame[1])
        return b"".join(out)

    def _entries(self, records: list[R], live: int) -> list[_Entry[R, M]]:
        out = []
        for rec in records:
            hit = self._items.get(rec.id)
            if hit is None or hit.record is not rec:
                hit = _Entry(rec, self._convert(rec))
                with self._lock:  # the pruning below iterates the dict
                    self._items[rec.id] = hit
            out.append(hit)
        if len(self._items) > 2 * live + 64:  # forget removed records now and then
            with self._lock:
                keep = {r.id for r in records} if len(records) == live else set()
                self._items = {k: v for k, v in self._items.items() if k in keep}
        return out
