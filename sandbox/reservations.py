"""Pod name reservations, so a kubelet retry never builds a second pod.

A name is reserved from the moment RunPodSandbox starts building until the pod
is removed. A second RunPodSandbox for the same name:

- while the first is still building, waits for it (within its own deadline);
- if the first finished after its caller had given up (the pod is "parked"),
  takes that pod over and returns it;
- if the first failed (the name was released), builds the pod itself;
- otherwise fails with AlreadyExists naming the existing pod.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from base.cancel import CallContext
from base.errors import AlreadyExists, DeadlineExceeded


@dataclass
class _Entry:
    pod_id: str
    building: bool
    parked: bool = False


class NameReservations:
    """name -> pod id, with waiting for in-flight builds."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._names: dict[str, _Entry] = {}

    def acquire(self, name: str, pod_id: str, ctx: CallContext) -> str | None:
        """Reserve ``name`` for ``pod_id`` (returns None), or hand over a parked pod's id."""
        with self._cond:
            while True:
                entry = self._names.get(name)
                if entry is None:
                    self._names[name] = _Entry(pod_id, building=True)
                    return None
                if entry.building:
                    try:
                        wait = ctx.timeout(1.0)
                    except DeadlineExceeded:
                        raise DeadlineExceeded(
                            f"pod sandbox {name} is still being created (pod {entry.pod_id}) "
                            "by an earlier call; retry to receive it when it is done"
                        ) from None
                    self._cond.wait(wait)
                    continue
                if entry.parked:
                    entry.parked = False
                    return entry.pod_id
                raise AlreadyExists(
                    f"pod sandbox name {name} is already reserved for pod {entry.pod_id}; "
                    "stop and remove that pod first"
                )

    def finish(self, name: str, pod_id: str, parked: bool) -> None:
        """The build of ``pod_id`` is done; ``parked`` if its caller had already given up."""
        with self._cond:
            entry = self._names.get(name)
            if entry is not None and entry.pod_id == pod_id:
                entry.building = False
                entry.parked = parked
            self._cond.notify_all()

    def restore(self, name: str, pod_id: str) -> None:
        """Reserve ``name`` for an existing pod (after a daemon restart)."""
        with self._cond:
            self._names[name] = _Entry(pod_id, building=False)

    def release(self, name: str, pod_id: str) -> None:
        """Free ``name`` if it is still reserved for ``pod_id``."""
        with self._cond:
            entry = self._names.get(name)
            if entry is not None and entry.pod_id == pod_id:
                del self._names[name]
            self._cond.notify_all()

    def reserved(self, name: str) -> str | None:
        """The pod id holding ``name``, if any."""
        entry = self._names.get(name)
        return None if entry is None else entry.pod_id
