"""systemd's notify protocol (sd_notify(3)), spoken directly on ``NOTIFY_SOCKET``.

Each message is one datagram of newline-separated ``KEY=value`` lines sent to the
AF_UNIX datagram socket systemd names in ``NOTIFY_SOCKET`` (a path, or an abstract
name when it starts with '@'). ``from_environment`` takes ``NOTIFY_SOCKET``,
``WATCHDOG_USEC`` and ``WATCHDOG_PID`` out of the environment, so the processes
peapod starts (conmon, runtimes, CNI plugins, infra processes) never inherit them.
Without ``NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("peapod.systemd")

_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    """Sends state changes to systemd; ``watchdog_usec`` is 0 when no watchdog is asked for."""

    def __init__(self, address: str = "", watchdog_usec: int = 0) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec if address else 0

    @classmethod
    def from_environment(cls) -> Notifier:
        """The notifier systemd's environment asks for; the variables are removed from it."""
        env = {name: os.environ.pop(name, "") for name in _ENV}
        usec = 0
        pid = env["WATCHDOG_PID"]
        if env["WATCHDOG_USEC"] and (not pid or pid == str(os.getpid())):
            try:
                usec = max(0, int(env["WATCHDOG_USEC"]))
            except ValueError:
                log.warning("ignoring an invalid WATCHDOG_USEC",
                            extra={"value": env["WATCHDOG_USEC"]})
        return cls(env["NOTIFY_SOCKET"], usec)

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    @property
    def watchdog_interval(self) -> float:
        """Seconds between watchdog pings (half of WATCHDOG_USEC); 0 when there is no watchdog."""
        return self.watchdog_usec / 2_000_000

    def send(self, **fields: str) -> bool:
        """Send one message (``READY="1"`` becomes ``READY=1``); False if it could not be sent."""
        if not self.address:
            return False
        text = "".join(f"{key}={value}\n" for key, value in fields.items())
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.sendto(text.encode(), target)
        except OSError as exc:
            log.warning("cannot notify systemd", extra={"socket": self.address,
                                                        "error": exc.strerror or str(exc)})
            return False
        finally:
            sock.close()
        return True

    def ready(self, status: str) -> bool:
        return self.send(READY="1", STATUS=status, MAINPID=str(os.getpid()))

    def reloading(self) -> bool:
        return self.send(RELOADING="1", MONOTONIC_USEC=str(time.clock_gettime_ns(
            time.CLOCK_MONOTONIC) // 1000))

    def stopping(self, status: str) -> bool:
        return self.send(STOPPING="1", STATUS=status)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")
