"""Retrying work in the background with exponential backoff (used for CNI DEL).

One thread serves every scheduled key. ``attempt(key)`` returns True when the
work is done (or no longer needed) and False to try again later; the delay
doubles from ``base`` up to ``cap``. A key may be scheduled with its own
attempt function instead (restart recovery uses this to take apart a pod whose
build was interrupted: DEL, then everything local); it serves that key until it
succeeds or the key is forgotten.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("peapod.sandbox")


class BackgroundRetrier:
    """Calls ``attempt(key)`` for each scheduled key until it returns True."""

    def __init__(
        self, attempt: Callable[[str], bool], base: float = 1.0, cap: float = 60.0,
        name: str = "retry",
    ) -> None:
        self._attempt = attempt
        self._base = base
        self._cap = cap
        self._name = name
        self._cond = threading.Condition()
        self._due: dict[str, tuple[float, float]] = {}  # key -> (when, next delay)
        self._own: dict[str, Callable[[], bool]] = {}  # key -> its own attempt function
        self._closed = False
        self._thread: threading.Thread | None = None

    def schedule(
        self, key: str, delay: float | None = None, attempt: Callable[[], bool] | None = None,
    ) -> None:
        """Try ``key`` after ``delay`` seconds (default ``base``); keeps an earlier time.

        With ``attempt``, that function (not the shared one) serves ``key`` until it
        returns True or the key is forgotten; a later schedule without one keeps it.
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
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def forget(self, key: str) -> None:
        with self._cond:
            self._due.pop(key, None)
            self._own.pop(key, None)

    def pending(self) -> list[str]:
        with self._cond:
            return list(self._due)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (an attempt in progress finishes first, up to ``timeout``)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _next(self) -> tuple[str, float, Callable[[], bool] | None] | None:
        """Wait for the earliest due key (with its own attempt, if any); None once closed."""
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                if self._due:
                    key, (when, delay) = min(self._due.items(), key=lambda kv: kv[1][0])
                    if when <= now:
                        del self._due[key]
                        return key, delay, self._own.get(key)
                    self._cond.wait(when - now)
                else:
                    self._cond.wait()
            return None

    def _loop(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            key, delay, own = item
            try:
                done = own() if own is not None else self._attempt(key)
            except Exception:
                log.exception("background retry crashed", extra={"key": key})
                done = False
            with self._cond:
                if done:
                    if own is not None and self._own.get(key) is own and key not in self._due:
                        del self._own[key]
                elif not self._closed and key not in self._due:
                    self._due[key] = (time.monotonic() + delay, min(delay * 2, self._cap))
