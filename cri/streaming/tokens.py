"""Single-use random tokens naming pending streaming requests.

A token is consumed by its first use, expires unused after ``ttl`` seconds, and
at most ``capacity`` are pending at once; an unknown, used or expired token is
simply absent (the server answers 404).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from base.errors import ResourceExhausted
from cri.streaming.requests import StreamRequest

TOKEN_BYTES = 16


class TokenCache:
    """Pending requests by token; thread-safe."""

    def __init__(
        self, ttl: float = 60.0, capacity: int = 1000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, tuple[float, StreamRequest]] = OrderedDict()

    def insert(self, req: StreamRequest) -> str:
        """A new token for ``req``; ResourceExhausted when ``capacity`` are pending."""
        with self._lock:
            self._expire()
            if len(self._pending) >= self.capacity:
                raise ResourceExhausted(
                    f"{self.capacity} streaming requests are pending; retry once some are used "
                    f"or expire ({self.ttl:g}s)"
                )
            token = secrets.token_urlsafe(TOKEN_BYTES)
            self._pending[token] = (self._clock() + self.ttl, req)
            return token

    def consume(self, token: str) -> StreamRequest | None:
        """The request behind ``token``, removing it; None if unknown, used or expired."""
        with self._lock:
            entry = self._pending.pop(token, None)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._pending)

    def _expire(self) -> None:
        now = self._clock()
        while self._pending:
            token, (deadline, _) = next(iter(self._pending.items()))
            if deadline > now:
                break
            del self._pending[token]
