"""An undo stack: each creation step registers how to take itself back.

On failure the steps are undone newest first. Every step runs even if an
earlier one failed (its error is collected), unless a step raises
``StopRollback``: then the remaining, older steps are left in place, for a
step whose failure makes undoing the rest unsafe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("peapod.sandbox")


class StopRollback(Exception):
    """Raised by an undo step to keep everything created before it."""


class UndoStack:
    """LIFO list of (description, undo function)."""

    def __init__(self) -> None:
        self._steps: list[tuple[str, Callable[[], None]]] = []
        self.stopped = False

    def push(self, what: str, undo: Callable[[], None]) -> None:
        self._steps.append((what, undo))

    def __len__(self) -> int:
        return len(self._steps)

    def discard(self) -> None:
        """Forget every step: the work is committed."""
        self._steps.clear()

    def rollback(self) -> list[str]:
        """Undo every step, newest first; return "what: error" for each that failed.

        ``stopped`` tells whether a step raised StopRollback (its message is
        included in the returned list, and the older steps were not run).
        """
        problems: list[str] = []
        while self._steps:
            what, undo = self._steps.pop()
            try:
                undo()
            except StopRollback as exc:
                problems.append(f"{what}: {exc}")
                self.stopped = True
                self._steps.clear()
                break
            except Exception as exc:  # keep undoing the rest
                message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                log.warning("undo step failed", extra={"step": what, "error": message})
                problems.append(f"{what}: {message}")
        return problems
