"""NRI wired into a daemon: the runtime, attached to the pod and container managers."""

from __future__ import annotations

from typing import Any

from nri.adjust import NodeSupport
from nri.container_events import ContainerEvents
from nri.pod_events import PodEvents
from nri.runtime import NRIObserver, NRIRuntime
from nri.settings import NRISettings
from oci.container.manager import ContainerManager
from sandbox.manager import PodManager


class NRIService:
    """Owns the NRI runtime; ``start`` after recovery and before serving CRI."""

    def __init__(self, settings: NRISettings, pods: PodManager,
                 containers: ContainerManager, observer: NRIObserver | None = None) -> None:
        facts = containers.facts
        node = NodeSupport(
            cgroup_v2=facts.cgroup_v2, swap_accounting=facts.swap_accounting,
            hugetlb=facts.hugetlb, own_oom_score_adj=facts.own_oom_score_adj,
            can_raise_limits="CAP_SYS_RESOURCE" in facts.bounding_set,
        )
        self.runtime = NRIRuntime(settings, pods, containers, node, observer)
        pods.hooks = PodEvents(self.runtime)
        containers.hooks = ContainerEvents(self.runtime)

    def start(self) -> None:
        self.runtime.start()

    def close(self) -> None:
        self.runtime.close()

    def describe(self) -> dict[str, Any]:
        return self.runtime.describe()
