"""systemd's watchdog: ``WATCHDOG=1`` every WATCHDOG_USEC/2, only while the daemon is healthy.

Healthy means ``check`` passes; the daemon's check is a Version call over its own
CRI socket (``cri.health``), so a server that stopped answering (all workers stuck,
the listener gone) stops the pings and systemd restarts peapod after WatchdogSec.
Pings keep a fixed rate: a slow check does not push the next one later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cri.sd_notify import Notifier

log = logging.getLogger("peapod.systemd")


class Watchdog:
    """One thread pinging systemd after each passing ``check``."""

    def __init__(self, notifier: Notifier, check: Callable[[float], bool]) -> None:
        self.notifier = notifier
        self.interval = notifier.watchdog_interval
        self.check = check
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start pinging; nothing happens when systemd asked for no watchdog."""
        if self.interval <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sd-watchdog", daemon=True)
        self._thread.start()
        log.info("systemd watchdog on", extra={"interval": self.interval})

    def _run(self) -> None:
        due = time.monotonic()
        healthy = True
        while not self._stop.is_set():
            ok = self.check(self.interval / 2)
            if self._stop.is_set():
                return
            if ok:
                self.notifier.watchdog()
            if ok != healthy:
                level = logging.INFO if ok else logging.ERROR
                log.log(level, "health check passes again; watchdog pings resume" if ok
                        else "health check failed; withholding the systemd watchdog ping")
                healthy = ok
            due += self.interval
            now = time.monotonic()
            if due < now:  # a check outlasted the interval: ping on time from here on
                due = now
            self._stop.wait(due - now)

    def stop(self) -> None:
        """Stop pinging (waits for a check in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.interval))
            self._thread = None
