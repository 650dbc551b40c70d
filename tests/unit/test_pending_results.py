"""base.pending: work that outlives its caller and results kept for the retry (fake clock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from base.cancel import CallContext
from base.errors import AlreadyExists, Cancelled, DeadlineExceeded, Internal, Unavailable
from base.pending import DISCARDED, HANDED, KEPT, OUTLIVED, RUNNING, PendingResults


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """A PendingResults over a fake clock, recording what it discards."""

    def __init__(self, keep_for: float = 60.0, max_kept: int = 3,
                 clock: Callable[[], float] | None = None) -> None:
        self.clock = Clock()
        self.events: list[tuple[str, str]] = []  # what the observer heard
        self.discarded: list[tuple[str, str]] = []
        self.discard_gate = threading.Event()
        self.discard_gate.set()
        self.results: PendingResults[str] = PendingResults(
            "test", keep_for=keep_for, max_kept=max_kept, discard=self._discard,
            clock=clock or self.clock, observer=self,
        )

    def late_work(self, name: str, event: str) -> None:
        self.events.append((name, event))

    def _discard(self, key: str, value: str) -> None:
        assert self.discard_gate.wait(10)
        self.discarded.append((key, value))

    def wait_state(self, key: str, state: str | None, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.results.state(key) != state:
            assert time.monotonic() < deadline, f"{key} never became {state}"
            time.sleep(0.01)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.discard_gate.set()
    harness.results.close(5)


def gated(value: str, gate: threading.Event, calls: list[str] | None = None
          ) -> Callable[[CallContext], str]:
    def work(ctx: CallContext) -> str:
        if calls is not None:
            calls.append(value)
        assert gate.wait(10)
        return value

    return work


def quick(value: str, calls: list[str]) -> Callable[[CallContext], str]:
    def work(ctx: CallContext) -> str:
        calls.append(value)
        return value

    return work


def late(h: Harness, key: str, value: str) -> threading.Event:
    """Start work for ``key`` whose caller gives up at once; returns the gate that ends it."""
    gate = threading.Event()
    with pytest.raises(DeadlineExceeded, match="goes on"):
        h.results.run(key, gated(value, gate), 30, CallContext.with_timeout(0.05, f"call {key}"))
    assert h.results.state(key) == RUNNING
    return gate


def taken(name: str) -> Callable[[], None]:
    def admit() -> None:
        raise AlreadyExists(f"{name} is taken")

    return admit


def test_a_caller_still_waiting_gets_the_result_and_nothing_is_kept(h: Harness) -> None:
    calls: list[str] = []
    assert h.results.run("a", quick("r1", calls), 5, CallContext.with_timeout(5)) == "r1"
    assert h.results.state("a") is None and not h.results.holds("a")
    with pytest.raises(AlreadyExists):  # handed over: the key is the owner's business again
        h.results.run("a", quick("r2", calls), 5, CallContext.with_timeout(5), admit=taken("a"))
    assert calls == ["r1"]


def test_the_work_runs_under_its_own_deadline_not_the_callers() -> None:
    h = Harness()
    seen: list[tuple[float | None, bool]] = []
    gate = threading.Event()

    def work(ctx: CallContext) -> str:
        assert gate.wait(10)
        seen.append((ctx.remaining(), ctx.cancelled))
        return "r"

    caller = CallContext.with_timeout(0.1)
    with pytest.raises(DeadlineExceeded):
        h.results.run("a", work, 30, caller)
    caller.cancel()  # the rpc ended: its context is cancelled, the work's is not
    gate.set()
    h.wait_state("a", KEPT)
    ((left, cancelled),) = seen
    assert left is not None and 25 < left <= 30 and not cancelled
    h.results.close(5)


def test_a_late_result_is_hidden_kept_and_handed_to_the_retry_once(h: Harness) -> None:
    gate = late(h, "a", "r1")
    assert h.results.holds("a")  # while running: hidden from listings
    gate.set()
    h.wait_state("a", KEPT)
    assert h.results.holds("a")  # kept: still hidden
    calls: list[str] = []
    started = time.monotonic()
    got = h.results.run("a", quick("r2", calls), 5, CallContext.with_timeout(5), admit=taken("a"))
    assert got == "r1" and calls == [] and time.monotonic() - started < 1.0
    assert not h.results.holds("a")
    with pytest.raises(AlreadyExists):
        h.results.run("a", quick("r3", calls), 5, CallContext.with_timeout(5), admit=taken("a"))
    assert calls == [] and h.discarded == []


def test_a_caller_already_out_of_time_leaves_a_kept_result_kept(h: Harness) -> None:
    late(h, "a", "r1").set()
    h.wait_state("a", KEPT)
    spent = CallContext.with_timeout(0)
    with pytest.raises(DeadlineExceeded, match="retry"):
        h.results.run("a", quick("r2", []), 5, spent)
    assert h.results.state("a") == KEPT
    assert h.results.run("a", quick("r2", []), 5, CallContext.with_timeout(5)) == "r1"


def test_a_retry_while_the_work_runs_waits_for_it(h: Harness) -> None:
    gate = late(h, "a", "r1")
    got: list[str] = []
    calls: list[str] = []
    retry = threading.Thread(target=lambda: got.append(
        h.results.run("a", quick("r2", calls), 5, CallContext.with_timeout(10))))
    retry.start()
    time.sleep(0.2)
    assert retry.is_alive() and got == []
    gate.set()
    retry.join(5)
    assert got == ["r1"] and calls == [] and h.results.state("a") is None


def test_a_retry_out_of_time_while_waiting_leaves_the_work_running(h: Harness) -> None:
    gate = late(h, "a", "r1")
    with pytest.raises(DeadlineExceeded, match="still in progress from an earlier call"):
        h.results.run("a", quick("r2", []), 5, CallContext.with_timeout(0.1))
    assert h.results.state("a") == RUNNING
    gate.set()
    h.wait_state("a", KEPT)


def test_a_cancelled_caller_gets_cancelled_and_the_work_goes_on(h: Harness) -> None:
    gate = threading.Event()
    ctx = CallContext.with_timeout(10)
    threading.Timer(0.1, ctx.cancel).start()
    with pytest.raises(Cancelled, match="goes on"):
        h.results.run("a", gated("r1", gate), 30, ctx)
    gate.set()
    h.wait_state("a", KEPT)


def test_failure_reaches_its_waiting_caller_and_keeps_nothing(h: Harness) -> None:
    def broken(ctx: CallContext) -> str:
        raise Internal("the build broke")

    with pytest.raises(Internal, match="the build broke"):
        h.results.run("a", broken, 5, CallContext.with_timeout(5))
    assert h.results.state("a") is None
    calls: list[str] = []
    assert h.results.run("a", quick("r2", calls), 5, CallContext.with_timeout(5)) == "r2"


def test_a_retry_waiting_on_work_that_fails_gets_a_fresh_attempt(h: Harness) -> None:
    gate = threading.Event()

    def fails(ctx: CallContext) -> str:
        assert gate.wait(10)
        raise Internal("first attempt failed")

    with pytest.raises(DeadlineExceeded):
        h.results.run("a", fails, 30, CallContext.with_timeout(0.05))
    got: list[str] = []
    calls: list[str] = []
    retry = threading.Thread(target=lambda: got.append(
        h.results.run("a", quick("r2", calls), 5, CallContext.with_timeout(10))))
    retry.start()
    time.sleep(0.1)
    assert calls == []  # it waits for the first attempt
    gate.set()
    retry.join(5)
    assert got == ["r2"] and calls == ["r2"] and h.results.state("a") is None


def test_an_unclaimed_result_is_discarded_after_keep_for(h: Harness) -> None:
    late(h, "a", "r1").set()
    h.wait_state("a", KEPT)
    h.clock.now += 59
    assert h.results.sweep() == [] and h.results.state("a") == KEPT
    h.clock.now += 2
    # Due now: this sweep or the reaper thread (which polls the clock) discards it, once.
    assert h.results.sweep() in ([], ["a"])
    h.wait_state("a", None)
    assert h.discarded == [("a", "r1")]
    assert not h.results.holds("a")
    calls: list[str] = []  # a retry after the discard starts afresh
    assert h.results.run("a", quick("r2", calls), 5, CallContext.with_timeout(5)) == "r2"
    assert calls == ["r2"]


def test_at_most_max_kept_results_the_oldest_go_first(h: Harness) -> None:
    for n, key in enumerate("abcd"):
        h.clock.now += 1
        late(h, key, f"r{n}").set()
        h.wait_state(key, KEPT)
        h.results.sweep()
    assert h.discarded == [("a", "r0")]
    assert [h.results.state(k) for k in "bcd"] == [KEPT] * 3


def test_a_retry_during_a_discard_waits_for_it_then_starts_afresh(h: Harness) -> None:
    late(h, "a", "r1").set()
    h.wait_state("a", KEPT)
    h.discard_gate.clear()
    h.clock.now += 61
    sweeper = threading.Thread(target=h.results.sweep)
    sweeper.start()
    h.wait_state("a", "discarding")
    got: list[str] = []
    calls: list[str] = []
    retry = threading.Thread(target=lambda: got.append(
        h.results.run("a", quick("r2", calls), 5, CallContext.with_timeout(10))))
    retry.start()
    time.sleep(0.1)
    assert got == [] and calls == [] and h.results.holds("a")
    h.discard_gate.set()
    retry.join(5)
    sweeper.join(5)
    assert h.discarded == [("a", "r1")] and got == ["r2"] and calls == ["r2"]


def test_the_reaper_discards_on_its_own() -> None:
    h = Harness(keep_for=0.2, clock=time.monotonic)
    late(h, "a", "r1").set()
    h.wait_state("a", KEPT)
    h.wait_state("a", None, timeout=5)
    assert h.discarded == [("a", "r1")]
    h.results.close(5)


def test_close_cancels_running_work_keeps_kept_results_and_refuses_new_calls() -> None:
    h = Harness()
    late(h, "kept", "r0").set()
    h.wait_state("kept", KEPT)
    rolled_back = threading.Event()

    def long_work(ctx: CallContext) -> str:
        try:
            while True:
                ctx.wait(0.05)
        finally:
            rolled_back.set()

    with pytest.raises(DeadlineExceeded):
        h.results.run("a", long_work, 600, CallContext.with_timeout(0.05))
    started = time.monotonic()
    h.results.close(5)
    assert time.monotonic() - started < 2 and rolled_back.is_set()
    assert h.results.state("a") is None
    assert h.results.state("kept") == KEPT and h.discarded == []  # left as it is
    with pytest.raises(Unavailable, match="shutting down"):
        h.results.run("b", quick("r", []), 5, CallContext.with_timeout(5))


def test_cancel_group_cancels_only_that_groups_running_work(h: Harness) -> None:
    late(h, "kept", "r0").set()  # no group, kept: left alone
    h.wait_state("kept", KEPT)
    stopped: list[str] = []

    def long_work(name: str) -> Callable[[CallContext], str]:
        def work(ctx: CallContext) -> str:
            try:
                while True:
                    ctx.wait(0.05)
            finally:
                stopped.append(name)

        return work

    errors: list[BaseException] = []

    def call(key: str, group: str) -> None:
        try:
            h.results.run(key, long_work(key), 600, CallContext.with_timeout(30), group=group)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=a) for a in (("a", "pod1"), ("b", "pod2"))]
    for t in threads:
        t.start()
    h.wait_state("a", RUNNING)
    h.wait_state("b", RUNNING)
    assert h.results.cancel_group("nobody", "no reason") == []
    started = time.monotonic()
    assert h.results.cancel_group("pod1", "its pod is being stopped") == ["a"]
    threads[0].join(5)
    assert time.monotonic() - started < 1
    # Its waiting starter gets the work's Cancelled, and nothing is kept for a retry.
    assert len(errors) == 1 and isinstance(errors[0], Cancelled) and stopped == ["a"]
    assert "cancelled: its pod is being stopped" in errors[0].message
    assert h.results.state("a") is None
    assert h.results.state("b") == RUNNING and h.results.state("kept") == KEPT
    h.results.cancel_group("pod2", "its pod is being removed")
    threads[1].join(5)
    assert stopped == ["a", "b"] and h.results.state("b") is None


def test_the_observer_hears_outlived_handed_and_discarded(h: Harness) -> None:
    calls: list[str] = []
    h.results.run("q", quick("r0", calls), 5, CallContext.with_timeout(5))
    assert h.events == []  # a caller that waited: nothing late
    late(h, "a", "r1").set()
    h.wait_state("a", KEPT)
    assert h.events == [("test", OUTLIVED)]
    assert h.results.run("a", quick("r2", calls), 5, CallContext.with_timeout(5)) == "r1"
    assert h.events[-1] == ("test", HANDED)
    late(h, "b", "r3").set()
    h.wait_state("b", KEPT)
    h.clock.now += 61
    h.results.sweep()  # or the reaper, whichever looks at the clock first
    h.wait_state("b", None)
    assert h.events == [("test", OUTLIVED), ("test", HANDED), ("test", OUTLIVED),
                        ("test", DISCARDED)]
