"""Pod name reservations: one pod per name, from the start of its build until removal.

A kubelet retry of a RunPodSandbox whose caller gave up never gets here while the
first call's pod is pending: ``sandbox.manager`` hands it that pod (``base.pending``).
Any other second RunPodSandbox for a reserved name fails with AlreadyExists.
"""

from __future__ import annotations

import threading

from base.errors import AlreadyExists


class NameReservations:
    """name -> pod id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}

    def acquire(self, name: str, pod_id: str) -> None:
        """Reserve ``name`` for ``pod_id``; AlreadyExists if another pod holds it."""
        with self._lock:
            self._refuse_taken(name)
            self._names[name] = pod_id

    def check(self, name: str) -> None:
        """AlreadyExists if ``name`` is reserved."""
        with self._lock:
            self._refuse_taken(name)

    def _refuse_taken(self, name: str) -> None:
        holder = self._names.get(name)
        if holder is not None:
            raise AlreadyExists(
                f"pod sandbox name {name} is already reserved for pod {holder}; "
                "stop and remove that pod first"
            )

    def restore(self, name: str, pod_id: str) -> None:
        """Reserve ``name`` for an existing pod (after a daemon restart)."""
        with self._lock:
            self._names[name] = pod_id

    def release(self, name: str, pod_id: str) -> None:
        """Free ``name`` if it is still reserved for ``pod_id``."""
        with self._lock:
            if self._names.get(name) == pod_id:
                del self._names[name]

    def reserved(self, name: str) -> str | None:
        """The pod id holding ``name``, if any."""
        return self._names.get(name)
