"""What the pod manager tells about a pod's lifecycle (the daemon turns it into events).

Each call comes after the change it reports is stored and visible to readers,
from the thread that made it, while that pod's lock is held, so calls about one
pod come in the order the changes were made.
"""

from __future__ import annotations

from typing import Protocol

from sandbox.record import SandboxRecord


class PodLifecycleObserver(Protocol):
    def pod_started(self, rec: SandboxRecord) -> None:
        """The pod was built and is ready (RunPodSandbox)."""

    def pod_stopped(self, rec: SandboxRecord) -> None:
        """A ready pod became not ready: stopped, or its infra process or namespaces died."""

    def pod_kept(self, rec: SandboxRecord) -> None:
        """A failed build was kept, not ready, for its network teardown to be retried;
        the pod is visible from now on (until RemovePodSandbox)."""

    def pod_removed(self, rec: SandboxRecord) -> None:
        """The pod is gone (RemovePodSandbox); ``rec`` is its last record."""


class NoPodObserver:
    def pod_started(self, rec: SandboxRecord) -> None:
        pass

    def pod_stopped(self, rec: SandboxRecord) -> None:
        pass

    def pod_kept(self, rec: SandboxRecord) -> None:
        pass

    def pod_removed(self, rec: SandboxRecord) -> None:
        pass
