"""Pod sandbox events for NRI plugins (``sandbox.hooks.PodHooks``).

RunPodSandbox is sent once the pod is built and before it is published, inside a
gate admission, and a plugin's error fails the call (the pod is rolled back and the
plugins are then told it is removed). StopPodSandbox is sent once per pod, after its
containers have stopped and before its network goes; RemovePodSandbox once its
containers are removed. Errors of those two are logged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from api import nri_pb2
from nri import events
from nri.convert import pod_message
from nri.runtime import NRIRuntime
from sandbox.record import SandboxRecord


class PodEvents:
    """The pod hooks, sending NRI events through ``runtime``."""

    def __init__(self, runtime: NRIRuntime) -> None:
        self.runtime = runtime
        self._stopped: set[str] = set()  # pods whose StopPodSandbox went out
        self._lock = threading.Lock()

    def run(self, rec: SandboxRecord, publish: Callable[[], None]) -> None:
        rt = self.runtime
        with rt.gate.admission():
            targets = rt.targets(events.RUN_POD)
            if targets:
                pod = pod_message(rec)
                req = nri_pb2.RunPodSandboxRequest(pod=pod)
                for plugin in targets:
                    rt.refusable(plugin, events.RUN_POD, req, nri_pb2.RunPodSandboxResponse, pod)
            publish()

    def abandoned(self, rec: SandboxRecord) -> None:
        self.runtime.later(self._removed, rec)

    def stop(self, rec: SandboxRecord) -> None:
        with self._lock:
            if rec.id in self._stopped:
                return
            self._stopped.add(rec.id)
        pod = pod_message(rec)
        self.runtime.notify(events.STOP_POD, nri_pb2.StopPodSandboxRequest(pod=pod),
                            nri_pb2.StopPodSandboxResponse, pod)

    def remove(self, rec: SandboxRecord) -> None:
        self._removed(rec)
        with self._lock:
            self._stopped.discard(rec.id)

    def _removed(self, rec: SandboxRecord) -> None:
        pod = pod_message(rec)
        self.runtime.notify(events.REMOVE_POD, nri_pb2.RemovePodSandboxRequest(pod=pod),
                            nri_pb2.RemovePodSandboxResponse, pod)
