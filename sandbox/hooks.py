"""Lifecycle hooks other parts of peapod attach to pod sandboxes (NRI plugins, say).

``PodManager`` calls them at fixed points: ``run`` with the built pod before it is
published (``publish`` makes it visible; a hook that raises fails RunPodSandbox and
the build rolls back, then ``abandoned`` says the pod is gone); ``stop`` once the
pod's containers are stopped and before its network is torn down; ``remove`` after
its containers are removed. Errors of ``stop`` and ``remove`` are the hook's to log:
a pod must always be stoppable and removable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from sandbox.record import SandboxRecord


class PodHooks(Protocol):
    def run(self, rec: SandboxRecord, publish: Callable[[], None]) -> None: ...

    def abandoned(self, rec: SandboxRecord) -> None: ...

    def stop(self, rec: SandboxRecord) -> None: ...

    def remove(self, rec: SandboxRecord) -> None: ...


class NoPodHooks:
    """Nothing attached: publish at once."""

    def run(self, rec: SandboxRecord, publish: Callable[[], None]) -> None:
        publish()

    def abandoned(self, rec: SandboxRecord) -> None:
        pass

    def stop(self, rec: SandboxRecord) -> None:
        pass

    def remove(self, rec: SandboxRecord) -> None:
        pass
