"""The event bus: fan-out in order, bounded queues, dropping a slow subscriber, start-up backlog."""

from __future__ import annotations

import threading
import time

import pytest

from base.errors import ResourceExhausted, Unavailable
from base.event_bus import EventBus, Subscription


def drain(sub: Subscription[int]) -> list[int]:
    out = []
    while (event := sub.next(timeout=0)) is not None:
        out.append(event)
    return out


def serving_bus() -> EventBus[int]:
    bus: EventBus[int] = EventBus()
    bus.serving(retain=0)
    return bus


def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = serving_bus()
    a, b = bus.subscribe(100, "a"), bus.subscribe(100, "b")
    for n in range(50):
        bus.publish(n)
    assert drain(a) == list(range(50)) and drain(b) == list(range(50))


def test_a_subscriber_that_falls_behind_is_dropped_and_the_others_go_on() -> None:
    bus = serving_bus()
    dropped: list[str] = []
    slow = bus.subscribe(3, "slow", on_end=lambda s: dropped.append(s.name))
    fast = bus.subscribe(3, "fast")
    got = []
    for n in range(10):
        bus.publish(n)  # never waits, whatever the slow one does
        got += drain(fast)
    assert got == list(range(10))
    assert dropped == ["slow"] and bus.subscribers() == 1
    with pytest.raises(ResourceExhausted, match="fell 3 events behind"):
        slow.next(timeout=0)
    assert slow.closed and slow.overflowed
    bus.publish(99)
    assert drain(fast) == [99]


def test_publish_does_not_wait_for_a_reader_that_never_reads() -> None:
    bus = serving_bus()
    bus.subscribe(1000, "stuck")
    start = time.perf_counter()
    for n in range(5000):
        bus.publish(n)
    assert time.perf_counter() - start < 2.0
    assert bus.subscribers() == 0  # dropped at the 1001st event


def test_next_wakes_for_an_event_and_for_close() -> None:
    bus = serving_bus()
    sub = bus.subscribe(10)
    got: list[int | None] = []
    reader = threading.Thread(target=lambda: got.extend([sub.next(), sub.next()]))
    reader.start()
    time.sleep(0.05)
    bus.publish(7)
    time.sleep(0.05)
    sub.close()  # what a cancelled call does
    reader.join(timeout=5)
    assert not reader.is_alive() and got == [7, None]
    assert bus.subscribers() == 0
    sub.close()  # idempotent


def test_next_times_out_with_none() -> None:
    sub = serving_bus().subscribe(10)
    start = time.monotonic()
    assert sub.next(timeout=0.05) is None
    assert time.monotonic() - start >= 0.05 and not sub.closed


def test_closing_the_bus_ends_subscriptions_after_their_queued_events() -> None:
    bus = serving_bus()
    ended: list[bool] = []
    sub = bus.subscribe(10, on_end=lambda s: ended.append(s.overflowed))
    bus.publish(1)
    bus.close()
    assert ended == [False]
    assert sub.next() == 1
    with pytest.raises(Unavailable, match="shutting down"):
        sub.next()
    with pytest.raises(Unavailable):
        bus.subscribe(10)


def test_start_up_events_reach_subscribers_that_come_within_the_retention() -> None:
    bus: EventBus[int] = EventBus(backlog_limit=3)
    for n in range(5):
        bus.publish(n)  # before serving: recovery's events, only the first 3 kept
    bus.serving(retain=0.2)
    bus.publish(5)  # live: not part of the backlog
    first = bus.subscribe(10)
    second = bus.subscribe(10)
    assert drain(first) == [0, 1, 2] and drain(second) == [0, 1, 2]
    bus.publish(6)
    assert drain(first) == [6] and drain(second) == [6]
    time.sleep(0.25)
    assert drain(bus.subscribe(10)) == []  # too late: forgotten



def test_a_subscriber_whose_queue_the_start_up_backlog_overflows_is_ended_at_once() -> None:
    """Its end is told (as for any dropped subscriber), it is not left subscribed, and its
    reader gets ResourceExhausted; the next publish neither reaches nor ends it again."""
    bus: EventBus[int] = EventBus()
    for n in range(5):
        bus.publish(n)
    bus.serving(retain=60)
    ended: list[Subscription[int]] = []
    small = bus.subscribe(3, "small", on_end=ended.append)
    assert ended == [small] and small.overflowed and small.closed
    assert bus.subscribers() == 0
    with pytest.raises(ResourceExhausted):
        small.next(timeout=0)
    bus.publish(5)
    assert ended == [small]
    big = bus.subscribe(5, "big", on_end=ended.append)  # the backlog fits: served as usual
    assert drain(big) == [0, 1, 2, 3, 4] and bus.subscribers() == 1 and ended == [small]
