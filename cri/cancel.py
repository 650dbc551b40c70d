"""Deadlines and cancellation passed from an RPC down into domain code.

A ``CallContext`` carries the caller's deadline and a cancellation flag. Slow
domain work (registry I/O, plugin runs) calls ``check()`` between steps and uses
``timeout()`` to bound each blocking wait, so a call never outlives its caller.
"""

from __future__ import annotations

import threading
import time

from cri.errors import Cancelled, DeadlineExceeded


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

    @classmethod
    def with_timeout(cls, seconds: float | None, what: str = "operation") -> CallContext:
        return cls(None if seconds is None else time.monotonic() + seconds, what)

    def child(self) -> CallContext:
        """A context cancelled with this one (and by itself) and bound by its deadline."""
        return CallContext(None, self.what, parent=self)

    def cancel(self) -> None:
        self._cancelled.set()

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
