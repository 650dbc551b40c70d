"""List items are converted once per record snapshot and follow every change."""

from __future__ import annotations

from dataclasses import dataclass, replace

from cri.convert.item_cache import ItemCache


@dataclass(frozen=True)
class Rec:
    id: str
    state: str


def test_same_snapshot_is_converted_once_and_a_new_one_again() -> None:
    calls: list[Rec] = []

    def convert(r: Rec) -> str:
        calls.append(r)
        return f"{r.id}:{r.state}"

    cache: ItemCache[Rec, str] = ItemCache(convert)
    a, b = Rec("a", "running"), Rec("b", "running")
    assert cache.items([a, b], 2) == ["a:running", "b:running"]
    assert cache.items([a, b], 2) == ["a:running", "b:running"]
    assert len(calls) == 2
    a2 = replace(a, state="exited")  # an equal-looking copy is still a new snapshot
    assert cache.items([a2, b], 2) == ["a:exited", "b:running"]
    assert calls[-1] is a2 and len(calls) == 3


def test_removed_records_are_forgotten() -> None:
    cache: ItemCache[Rec, str] = ItemCache(lambda r: r.id)
    for n in range(200):
        cache.items([Rec(f"gone{n}", "x")], 1)
    cache.items([Rec("kept", "x")], 1)
    assert len(cache._items) <= 2 * 1 + 64 + 1
