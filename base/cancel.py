"""Deadlines and cancellation passed from an RPC down into domain code.

A ``CallContext`` carries the caller's deadline and a cancellation flag. Slow
domain work (registry I/O, plugin runs) calls ``check()`` between steps and uses
``timeout()`` to bound each blocking wait, so a call never outlives its caller.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from base.errors import Cancelled, DeadlineExceeded


class CallContext:
    """Deadline (monotonic seconds) plus a cancel flag for one unit of work."""

    def __init__(
        self,
        deadline: float | None = None,
        what: str = "operation",
        parent: CallContext | None = None,
    ) -> None:
        self.deadline = deadline
        self.what = what
        self.parent = parent
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next = 0

    @classmethod
    def with_timeout(cls, seconds: float | None, what: str = "operation") -> CallContext:
        return cls(None if seconds is None else time.monotonic() + seconds, what)

    def child(self) -> CallContext:
        """A context cancelled with this one (and by itself) and bound by its deadline."""
        return CallContext(None, self.what, parent=self)

    def cancel(self) -> None:
        """Cancel this context (and its children); runs the on_cancel callbacks once."""
        with self._lock:
            if self._cancelled.is_set():
                return
            self._cancelled.set()
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` when this context or an ancestor is cancelled.

        Returns a function that unregisters it. Used to interrupt blocking I/O
        (e.g. shut a socket down) the moment the caller gives up.
        """
        removers: list[Callable[[], None]] = []
        ctx: CallContext | None = self
        while ctx is not None:
            removers.append(ctx._register(callback))
            ctx = ctx.parent
        if self.cancelled:
            callback()

        def remove() -> None:
            for remover in removers:
                remover()

        return remove

    def _register(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            key = self._next
            self._next += 1
            self._callbacks[key] = callback

        def remove() -> None:
            with self._lock:
                self._callbacks.pop(key, None)

        return remove

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set() or (self.parent is not None and self.parent.cancelled)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (own or a parent's), or None when there is none."""
        own = None if self.deadline is None else self.deadline - time.monotonic()
        inherited = self.parent.remaining() if self.parent is not None else None
        if own is None:
            return inherited
        return own if inherited is None else min(own, inherited)

    def check(self) -> None:
        """Raise Cancelled or DeadlineExceeded if the work must stop now."""
        if self.cancelled:
            raise Cancelled(f"{self.what} was cancelled by the caller")
        left = self.remaining()
        if left is not None and left <= 0:
            raise DeadlineExceeded(f"{self.what} did not finish before the caller's deadline")

    def timeout(self, cap: float | None = None) -> float | None:
        """A timeout for one blocking step: the time left, at most ``cap``.

        Raises if no time is left, so callers never block with a zero timeout.
        """
        self.check()
        left = self.remaining()
        if left is None:
            return cap
        return left if cap is None else min(left, cap)

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early (and raising) on cancel or deadline."""
        left = self.remaining()
        if left is not None:
            seconds = min(seconds, max(left, 0))
        self._cancelled.wait(seconds)
        self.check()
