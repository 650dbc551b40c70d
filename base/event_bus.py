"""A publish/subscribe bus: many subscribers, each with a bounded queue of its own.

Publishing never blocks on a subscriber: an event is appended to every queue and
the publisher goes on. A subscriber whose queue already holds its ``limit`` events
has fallen too far behind: it is cut off (queue emptied, its reader gets
ResourceExhausted) rather than slow the publisher or grow without bound. The
subscription's ``on_end`` is told whenever the bus ends it (cut off, or the bus
closed), so its owner can also end a reader that is not waiting on the queue.
Deliveries are serialised, so every subscriber sees events in the order they were
published.

Events published before the bus is told it serves (``serving``) are start-up
events (what recovery found); they are kept, up to ``backlog_limit``, and every
subscriber that comes within ``retain`` seconds of serving receives them first.
Nothing is persisted: a restarted process starts with an empty bus.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from base.errors import PeapodError, ResourceExhausted, Unavailable

log = logging.getLogger("peapod.events")

T = TypeVar("T")


class Subscription(Generic[T]):
    """One subscriber's queue; read it with ``next``, leave with ``close``."""

    def __init__(
        self, bus: EventBus[T], limit: int, name: str,
        on_end: Callable[[Subscription[T]], None] | None,
    ) -> None:  # fmt: skip
        self.limit = limit
        self.name = name
        self.overflowed = False  # cut off for falling behind
        self._bus = bus
        self._on_end = on_end
        self._cond = threading.Condition()
        self._queue: deque[T] = deque()
        self._ended: PeapodError | None = None  # why the bus ended it
        self._closed = False  # its reader left

    def next(self, timeout: float | None = None) -> T | None:
        """The next event, waiting up to ``timeout`` (None: until one comes).

        None at the timeout or once ``close`` was called; raises the reason the
        bus ended the subscription (ResourceExhausted, Unavailable) once the events
        queued before that are read.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._ended is not None:
                    raise self._ended
                if self._closed:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left)
            return self._queue.popleft()

    @property
    def closed(self) -> bool:
        """Whether the reader left or the bus ended the subscription."""
        return self._closed or self._ended is not None

    def close(self) -> None:
        """The reader leaves: wake it, drop the queue, leave the bus. Idempotent."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()
        self._bus._remove(self)

    # ---- the bus's side ----------------------------------------------------
    def _offer(self, event: T) -> bool:
        """Queue ``event``; False if the queue was full and the subscriber is cut off."""
        with self._cond:
            if self._closed or self._ended is not None:
                return True
            if len(self._queue) >= self.limit:
                self._queue.clear()
                self.overflowed = True
                self._ended = ResourceExhausted(
                    f"this subscriber fell {self.limit} events behind and was disconnected "
                    "so that the runtime never waits for a reader; reconnect, and list "
                    "the current state to catch up"
                )
                self._cond.notify_all()
                return False
            self._queue.append(event)
            self._cond.notify()
            return True

    def _end(self, error: PeapodError) -> None:
        with self._cond:
            if self._ended is None:
                self._ended = error
            self._cond.notify_all()

    def _tell_end(self) -> None:
        if self._on_end is None:
            return
        try:
            self._on_end(self)
        except Exception:
            log.exception("an event subscription's end callback failed")


class EventBus(Generic[T]):
    """Fan-out of published events to the current subscribers."""

    def __init__(self, backlog_limit: int = 1000) -> None:
        self._lock = threading.Lock()  # serialises deliveries and subscriber changes
        self._subs: list[Subscription[T]] = []
        self._backlog: list[T] | None = []  # None once forgotten
        self._backlog_limit = backlog_limit
        self._retain_until: float | None = None  # set by serving()
        self._closed = False

    def publish(self, event: T) -> None:
        """Hand ``event`` to every subscriber; never waits for one."""
        dropped = []
        with self._lock:
            self._keep_for_late_comers(event)
            for sub in self._subs:
                if not sub._offer(event):
                    dropped.append(sub)
            for sub in dropped:
                self._subs.remove(sub)
        for sub in dropped:
            sub._tell_end()

    def subscribe(
        self, limit: int, name: str = "",
        on_end: Callable[[Subscription[T]], None] | None = None,
    ) -> Subscription[T]:  # fmt: skip
        """A new subscription with a queue of at most ``limit`` events (at least 1).

        It starts with the start-up backlog if it comes within the retention time; one
        whose queue that backlog overflows is cut off at once, like any subscriber
        falling behind (never subscribed, ``on_end`` told before this returns).
        Unavailable once the bus is closed.
        """
        sub = Subscription(self, max(1, limit), name, on_end)
        with self._lock:
            if self._closed:
                raise Unavailable("the runtime is shutting down; no new event subscriptions")
            self._expire_backlog()
            fits = all(sub._offer(event) for event in self._backlog or ())
            if fits:
                self._subs.append(sub)
        if not fits:
            sub._tell_end()
        return sub

    def serving(self, retain: float) -> None:
        """From now on, keep the start-up backlog for subscribers for ``retain`` seconds."""
        with self._lock:
            self._retain_until = time.monotonic() + retain

    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        """End every subscription (its reader gets Unavailable) and refuse new ones."""
        with self._lock:
            self._closed = True
            subs, self._subs = self._subs, []
        for sub in subs:
            sub._end(Unavailable("the runtime is shutting down; reconnect when it is back"))
            sub._tell_end()

    # ---- internals ---------------------------------------------------------
    def _remove(self, sub: Subscription[T]) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _keep_for_late_comers(self, event: T) -> None:
        """Add a start-up event to the backlog (only before ``serving``)."""
        if self._retain_until is not None:
            self._expire_backlog()
            return
        if self._backlog is None:
            return
        if len(self._backlog) < self._backlog_limit:
            self._backlog.append(event)
            if len(self._backlog) == self._backlog_limit:
                log.warning("start-up event backlog full; later start-up events are not "
                            "kept for subscribers", extra={"limit": self._backlog_limit})

    def _expire_backlog(self) -> None:
        if (self._backlog is not None and self._retain_until is not None
                and time.monotonic() >= self._retain_until):  # fmt: skip
            self._backlog = None
