"""Retrying work in the background with exponential backoff (used for CNI DEL).

``attempt(key)`` returns True when the work is done (or no longer needed) and
False to try again later; the delay doubles from ``base`` up to ``cap``. A key
may be scheduled with its own attempt function instead (restart recovery uses
this to take apart a pod whose build was interrupted: DEL, then everything
local); it serves that key until it succeeds or the key is forgotten.

Keys are tried independently: one dispatcher thread hands each due key to a
worker thread of its own, at most ``max_workers`` at once, and never runs one
key twice at the same time. So a plugin hanging on one pod's DEL delays only
that pod (and, once ``max_workers`` pods hang, the others wait for a worker).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("peapod.sandbox")

MAX_WORKERS = 8


class BackgroundRetrier:
    """Calls ``attempt(key)`` for each scheduled key until it returns True."""

    def __init__(
        self, attempt: Callable[[str], bool], base: float = 1.0, cap: float = 60.0,
        name: str = "retry", max_workers: int = MAX_WORKERS,
    ) -> None:
        self._attempt = attempt
        self._base = base
        self._cap = cap
        self._name = name
        self._max_workers = max(1, max_workers)
        self._cond = threading.Condition()
        self._due: dict[str, tuple[float, float]] = {}  # key -> (when, next delay)
        self._own: dict[str, Callable[[], bool]] = {}  # key -> its own attempt function
        self._running: dict[str, threading.Thread] = {}  # key -> the worker trying it
        self._closed = False
        self._thread: threading.Thread | None = None

    def schedule(
        self, key: str, delay: float | None = None, attempt: Callable[[], bool] | None = None,
    ) -> None:
        """Try ``key`` after ``delay`` seconds (default ``base``); keeps an earlier time.

        With ``attempt``, that function (not the shared one) serves ``key`` until it
        returns True or the key is forgotten; a later schedule without one keeps it.
        A key being tried now is tried again after that attempt ends.
        """
        first = self._base if delay is None else delay
        with self._cond:
            if self._closed:
                return
            if attempt is not None:
                self._own[key] = attempt
            when = time.monotonic() + first
            current = self._due.get(key)
            if current is None or current[0] > when:
                self._due[key] = (when, max(first * 2, self._base))
            if self._thread is None:
                self._thread = threading.Thread(target=self._dispatch, name=self._name,
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def forget(self, key: str) -> None:
        """Drop ``key``'s schedule; an attempt under way finishes but is not repeated."""
        with self._cond:
            self._due.pop(key, None)
            self._own.pop(key, None)

    def pending(self) -> list[str]:
        """Keys scheduled or being tried."""
        with self._cond:
            return list(dict.fromkeys([*self._running, *self._due]))

    def close(self, timeout: float = 5.0) -> None:
        """Stop dispatching; attempts in progress get up to ``timeout`` to finish."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            threads = [t for t in (self._thread, *self._running.values()) if t is not None]
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _next(self) -> tuple[str, float, Callable[[], bool] | None] | None:
        """Wait for the earliest due key not being tried and a free worker; None once closed.

        Called with ``_cond`` held.
        """
        while not self._closed:
            now = time.monotonic()
            ready = [(when, key) for key, (when, _) in self._due.items()
                     if key not in self._running]
            if ready and len(self._running) < self._max_workers:
                when, key = min(ready)
                if when <= now:
                    _, delay = self._due.pop(key)
                    return key, delay, self._own.get(key)
                self._cond.wait(when - now)
            else:
                self._cond.wait()  # a worker ending or a schedule() notifies
        return None

    def _dispatch(self) -> None:
        with self._cond:
            while True:
                item = self._next()
                if item is None:
                    return
                key, delay, own = item
                worker = threading.Thread(target=self._work, args=(key, delay, own),
                                          name=f"{self._name}-{key[:12]}", daemon=True)
                self._running[key] = worker
                worker.start()

    def _work(self, key: str, delay: float, own: Callable[[], bool] | None) -> None:
        try:
            done = own() if own is not None else self._attempt(key)
        except Exception:
            log.exception("background retry crashed", extra={"key": key})
            done = False
        with self._cond:
            del self._running[key]
            if done:
                if own is not None and self._own.get(key) is own and key not in self._due:
                    del self._own[key]
            elif not self._closed and key not in self._due:
                self._due[key] = (time.monotonic() + delay, min(delay * 2, self._cap))
            self._cond.notify_all()
