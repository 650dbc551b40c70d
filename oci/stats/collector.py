"""The background stats thread: every ``collection_period`` the cgroup figures and
networks of each container and pod (``StatsService.refresh``), then one budgeted round
of writable-layer walks.

A stats call that meets a container the walks have not reached yet (just created)
wakes the thread for an early round over such containers only, at most once a
second, so a new container gets its figure without waiting a whole period; the
call itself does not wait.
"""

from __future__ import annotations

import logging
import threading
import time

from oci.stats.service import StatsService

log = logging.getLogger("peapod.stats")

EARLY_ROUND_GAP = 1.0  # seconds between early rounds for new containers, at least


class StatsCollector:
    """Runs ``StatsService``'s background work on its own thread until ``close``."""

    def __init__(self, service: StatsService, period: float) -> None:
        self.service = service
        self.period = max(0.1, period)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_early = 0.0
        service.on_unwalked = self.poke

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stats-collector", daemon=True)
            self._thread.start()

    def poke(self) -> None:
        """Ask for an early round over containers that have no layer figure yet."""
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread; a walk in progress ends at its next directory."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_round(self, only_new: bool = False) -> None:
        """One round: cgroup figures (full rounds only), then layer walks within budget."""
        svc = self.service
        if not only_new:
            svc.refresh()
        svc.layers.walk_round(svc.uppers(), only_new=only_new, stop=self._stop)

    def _run(self) -> None:
        next_full = time.monotonic()
        early_pending = False
        while not self._stop.is_set():
            deadline = next_full
            if early_pending:
                deadline = min(deadline, self._last_early + EARLY_ROUND_GAP)
            if self._wake.wait(max(0.0, deadline - time.monotonic())):
                self._wake.clear()
                early_pending = True
            if self._stop.is_set():
                return
            now = time.monotonic()
            if now >= next_full:
                self._round(only_new=False)
                next_full = now + self.period
                early_pending = False
            elif early_pending and now - self._last_early >= EARLY_ROUND_GAP:
                self._round(only_new=True)
                self._last_early = now
                early_pending = False

    def _round(self, only_new: bool) -> None:
        start = time.perf_counter()
        try:
            self.run_round(only_new=only_new)
        except Exception:
            log.exception("stats collection round failed")
            return
        log.debug("stats round done", extra={
            "seconds": round(time.perf_counter() - start, 4), "only_new": only_new})  # fmt: skip
