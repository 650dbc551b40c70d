"""Run identical slow operations once and share the result among callers.

Each caller waits with its own CallContext. The shared work gets a context of
its own whose deadline is the latest of its waiters'; when the last waiter
leaves (deadline or cancellation), the shared work is cancelled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from base.cancel import CallContext

T = TypeVar("T")


class _Flight(Generic[T]):
    def __init__(self, what: str) -> None:
        self.ctx = CallContext(None, what)
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.waiters = 0
        self.unbounded = False  # some waiter has no deadline


def _spent(flight: _Flight[T]) -> bool:
    """The flight's work was cancelled or ran out of time, so joining it cannot succeed."""
    if flight.ctx.cancelled:
        return True
    left = flight.ctx.remaining()
    return left is not None and left <= 0


class SingleFlight(Generic[T]):
    """Deduplicates concurrent calls by key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight[T]] = {}

    def run(self, key: Hashable, work: Callable[[CallContext], T], ctx: CallContext) -> T:
        """Run ``work`` for ``key`` unless it is already running; wait for its result."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None and _spent(flight):
                # Abandoned or out of time, and only unwinding: a newcomer gets fresh work.
                del self._flights[key]
                flight = None
            starter = flight is None
            if flight is None:
                flight = _Flight(ctx.what)
                self._flights[key] = flight
            flight.waiters += 1
            self._widen_deadline(flight, ctx)
        if starter:
            thread = threading.Thread(
                target=self._execute, args=(key, flight, work), name="pull", daemon=True
            )
            thread.start()
        try:
            while not flight.done.is_set():
                ctx.check()
                left = ctx.remaining()
                flight.done.wait(0.05 if left is None else min(0.05, max(left, 0.001)))
        finally:
            with self._lock:
                flight.waiters -= 1
                if flight.waiters == 0 and not flight.done.is_set():
                    flight.ctx.cancel()
                    if self._flights.get(key) is flight:
                        del self._flights[key]
        if flight.error is not None:
            raise flight.error
        return flight.result  # type: ignore[return-value]

    @staticmethod
    def _widen_deadline(flight: _Flight[T], ctx: CallContext) -> None:
        if ctx.deadline is None:
            flight.unbounded = True
            flight.ctx.deadline = None
        elif not flight.unbounded and (
            flight.ctx.deadline is None or ctx.deadline > flight.ctx.deadline
        ):
            flight.ctx.deadline = ctx.deadline

    def _execute(self, key: Hashable, flight: _Flight[T], work: Callable[[CallContext], T]) -> None:
        try:
            flight.result = work(flight.ctx)
        except BaseException as exc:
            flight.error = exc
        finally:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()
