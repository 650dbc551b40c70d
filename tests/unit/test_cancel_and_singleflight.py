"""CallContext deadlines, cancellation callbacks, and single-flight sharing."""

from __future__ import annotations

import threading
import time

import pytest

from base.cancel import CallContext
from base.errors import Cancelled, DeadlineExceeded
from oci.image.singleflight import SingleFlight


def test_deadline_and_timeout() -> None:
    ctx = CallContext.with_timeout(0.2)
    assert 0 < ctx.timeout(10) <= 0.2
    assert ctx.timeout(0.01) == 0.01
    time.sleep(0.25)
    with pytest.raises(DeadlineExceeded):
        ctx.check()
    assert CallContext().timeout(5) == 5
    assert CallContext().remaining() is None


def test_child_follows_parent_cancel_and_deadline() -> None:
    parent = CallContext.with_timeout(0.5)
    child = parent.child()
    assert child.remaining() is not None and child.remaining() <= 0.5
    seen: list[str] = []
    remove = child.on_cancel(lambda: seen.append("child"))
    parent.cancel()
    assert child.cancelled
    assert seen == ["child"]
    with pytest.raises(Cancelled):
        child.check()
    remove()  # harmless after firing


def test_on_cancel_unregister_and_late_registration() -> None:
    ctx = CallContext()
    seen: list[int] = []
    remove = ctx.on_cancel(lambda: seen.append(1))
    remove()
    ctx.cancel()
    ctx.cancel()  # idempotent
    assert seen == []
    ctx.on_cancel(lambda: seen.append(2))  # already cancelled: runs at once
    assert seen == [2]


def test_singleflight_runs_once_and_shares_result() -> None:
    flights: SingleFlight[int] = SingleFlight()
    calls = 0
    gate = threading.Event()

    def work(ctx: CallContext) -> int:
        nonlocal calls
        calls += 1
        gate.wait(5)
        return 42

    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(flights.run("k", work, CallContext())))
        for _ in range(5)
    ]
    for t in threads:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in threads:
        t.join(5)
    assert results == [42] * 5
    assert calls == 1


def test_singleflight_cancels_work_when_last_waiter_leaves() -> None:
    flights: SingleFlight[int] = SingleFlight()
    stopped = threading.Event()

    def work(ctx: CallContext) -> int:
        while not ctx.cancelled:
            time.sleep(0.01)
        stopped.set()
        raise Cancelled("stopped")

    with pytest.raises(DeadlineExceeded):
        flights.run("k", work, CallContext.with_timeout(0.1))
    assert stopped.wait(2), "the shared work was not cancelled"


def test_singleflight_keeps_work_while_a_waiter_remains() -> None:
    flights: SingleFlight[str] = SingleFlight()
    release = threading.Event()

    def work(ctx: CallContext) -> str:
        while not release.is_set():
            ctx.check()
            time.sleep(0.01)
        return "done"

    out: list[str] = []
    patient = threading.Thread(target=lambda: out.append(flights.run("k", work, CallContext())))
    patient.start()
    time.sleep(0.05)
    with pytest.raises(DeadlineExceeded):
        flights.run("k", work, CallContext.with_timeout(0.1))
    release.set()
    patient.join(5)
    assert out == ["done"]


def test_singleflight_error_reaches_every_waiter() -> None:
    flights: SingleFlight[int] = SingleFlight()

    def work(ctx: CallContext) -> int:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        flights.run("k", work, CallContext())


def test_singleflight_retry_after_abandon_gets_fresh_work() -> None:
    """A caller arriving after the last waiter gave up must not join the cancelled work.

    The kubelet retries a timed-out PullImage at once; the abandoned pull is still
    unwinding, and the retry must start its own work instead of inheriting "cancelled".
    """
    flights: SingleFlight[str] = SingleFlight()
    unwinding = threading.Event()
    calls = 0

    def work(ctx: CallContext) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            while not ctx.cancelled:
                time.sleep(0.01)
            unwinding.wait(2)  # slow clean-up after the cancel
            ctx.check()
        return "pulled"

    with pytest.raises(DeadlineExceeded):
        flights.run("k", work, CallContext.with_timeout(0.05))
    try:
        assert flights.run("k", work, CallContext.with_timeout(5)) == "pulled"
    finally:
        unwinding.set()
    assert calls == 2
