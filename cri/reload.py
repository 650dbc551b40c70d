"""SIGHUP: re-read the configuration and apply what can change safely while running.

Reloaded: ``log_level`` (peapod's and conmon's for new containers), the runtime
handlers (``runtime.runtimes``, ``runtime.default_runtime``) and the RuntimeDefault
seccomp profile (``runtime.seccomp_profile``), for pods and containers created from
then on; running containers keep what they were created with. registries.conf needs
no signal: it is re-read when it changes. Any other changed key is reported as
needing a restart and keeps its running value. A configuration that does not load,
or a handler or profile that does not check, is refused whole: the old one stays,
the error is logged, and ``peapod status`` shows the failed reload.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from base.errors import PeapodError
from cri import logs
from cri.config import Config, ConfigError, ConfigSource, changed_keys
from cri.services import Services

log = logging.getLogger("peapod.reload")

RELOADABLE = ("log_level", "runtime.default_runtime", "runtime.runtimes", "runtime.seccomp_profile")
HISTORY = 10  # reloads kept for ``peapod status``


@dataclass(frozen=True)
class ReloadEvent:
    """One SIGHUP's outcome."""

    at: float  # unix seconds
    ok: bool
    applied: tuple[str, ...] = ()  # dotted keys now in force
    needs_restart: tuple[str, ...] = ()  # changed on disk, ignored until a restart
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "ok": self.ok, "applied": list(self.applied),
                "needs_restart": list(self.needs_restart), "error": self.error}  # fmt: skip


def reloadable(key: str) -> bool:
    return any(key == r or key.startswith(r + ".") for r in RELOADABLE)


def merged(running: Config, loaded: Config) -> Config:
    """``running`` with the reloadable options taken from ``loaded``."""
    runtime = dataclasses.replace(
        running.runtime,
        default_runtime=loaded.runtime.default_runtime,
        runtimes=loaded.runtime.runtimes,
        seccomp_profile=loaded.runtime.seccomp_profile,
    )
    return dataclasses.replace(running, log_level=loaded.log_level, runtime=runtime)


@dataclass
class Reloader:
    """Applies the configuration of ``source`` to ``services`` on each ``reload()``."""

    source: ConfigSource
    services: Services
    history: list[ReloadEvent] = field(default_factory=list)

    def reload(self) -> ReloadEvent:
        running = self.services.config
        try:
            loaded = self.source.load()
            changed = changed_keys(running, loaded)
            target = merged(running, loaded)
            self.services.reconfigure(target)
        except Exception as exc:
            message = exc.message if isinstance(exc, PeapodError) else str(exc)
            log.error("reload refused; keeping the running configuration",
                      exc_info=not isinstance(exc, ConfigError | PeapodError),
                      extra={"error": message})  # fmt: skip
            return self._record(ReloadEvent(time.time(), False, error=message))
        logs.set_level(target.log_level)
        event = ReloadEvent(
            time.time(), True,
            applied=tuple(k for k in changed if reloadable(k)),
            needs_restart=tuple(k for k in changed if not reloadable(k)),
        )
        if event.needs_restart:
            log.warning("changed options need a restart; keeping their running values",
                        extra={"keys": ",".join(event.needs_restart)})  # fmt: skip
        log.info("configuration reloaded",
                 extra={"applied": ",".join(event.applied) or "nothing"})  # fmt: skip
        return self._record(event)

    def _record(self, event: ReloadEvent) -> ReloadEvent:
        self.history = [*self.history, event][-HISTORY:]
        return event
