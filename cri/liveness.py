"""Liveness while the daemon runs: a periodic probe of conmons and infra processes.

Exits are noticed through conmon's exit files, so a conmon that dies (OOM kill,
a stray ``kill -9``) leaves its container unobserved, and a pod whose infra
process died has lost its PID namespace. Like CRI-O, one daemon thread checks
every ``PROBE_INTERVAL`` seconds: each running container's conmon
(``ContainerManager.probe_monitors``) and each ready pod's infra process
(``PodManager.probe_infras``). The checks read /proc by pid and start time one
object at a time and hold no lock while doing so; status and list calls keep
reading memory only.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger("peapod.liveness")

PROBE_INTERVAL = 10.0  # seconds, as CRI-O
# Test hook: the integration tests start the daemon with a shorter interval.
INTERVAL_ENV = "PEAPOD_TEST_PROBE_INTERVAL"


def probe_interval() -> float:
    """``PROBE_INTERVAL``, unless the test hook's environment variable sets another."""
    text = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(text) if text else PROBE_INTERVAL
    except ValueError:
        log.warning("ignoring an invalid probe interval", extra={"value": text})
        return PROBE_INTERVAL
    return value if value > 0 else PROBE_INTERVAL


class LivenessProbe:
    """Runs each of ``checks`` every ``interval`` seconds on one daemon thread."""

    def __init__(self, checks: Sequence[Callable[[], None]], interval: float | None = None) -> None:
        self.checks = list(checks)
        self.interval = probe_interval() if interval is None else interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="liveness-probe", daemon=True)
        self._thread.start()
        log.debug("liveness probe started", extra={"interval": self.interval})

    def probe_once(self) -> None:
        for check in self.checks:
            if self._stop.is_set():
                return
            try:
                check()
            except Exception:
                log.exception("liveness probe failed")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.probe_once()

    def close(self) -> None:
        """Stop the thread (waits for a round in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
