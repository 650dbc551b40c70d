"""Shared lifecycle for test helpers that run something in the background.

A `Background` subclass implements `start()` (returning self) and `stop()`
(idempotent). It calls `_track()` once the thing it runs exists and
`_untrack()` when stopping; whatever is still tracked at interpreter exit is
stopped by one atexit hook, newest first.
"""

from __future__ import annotations

import atexit
import threading
from types import TracebackType
from typing import Self

_LIVE: dict[Background, None] = {}  # insertion-ordered set of started, not yet stopped helpers
_LIVE_LOCK = threading.Lock()


class Background:
    """Base class: context-manager protocol plus live-instance tracking for atexit cleanup."""

    def start(self) -> Self:
        """Start the background work and return self."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the background work; must be safe to call more than once."""
        raise NotImplementedError

    def _track(self) -> None:
        """Record self as live, so it is stopped at interpreter exit if nobody else does."""
        with _LIVE_LOCK:
            _LIVE[self] = None

    def _untrack(self) -> None:
        """Forget self as live; harmless if it was not tracked."""
        with _LIVE_LOCK:
            _LIVE.pop(self, None)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        live = list(_LIVE)
    for obj in reversed(live):
        obj.stop()
