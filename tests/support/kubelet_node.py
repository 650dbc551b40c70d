"""A node for tests: peapod on a CNI test network, a real kubelet pointed at it, and views.

``KubeletNode`` starts peapod (``support.pods.PodEnv``: its own bridge, /24 and root, the
registry marked insecure), prepares the host (``KubeletHost``), writes the static pod
manifests and starts the kubelet; ``StatusHistory`` polls its ``/pods`` meanwhile.
``teardown`` gives the host back step by step, each step running whatever the ones
before it raised, and returns what stayed behind.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox.mounts import MOUNTINFO, parse_mountinfo, umount_all
from support.census import Census, Snapshot
from support.daemon import registries_conf_text
from support.kubelet import Kubelet, crictl, kubelet_binary
from support.kubelet_host import KubeletHost
from support.kubelet_log import Window
from support.pods import HostState, PodEnv


class StatusHistory:
    """Everything a thread polling ``/pods`` saw, per (manifest name, container name).

    The kubelet shows a waiting reason such as ErrImagePull only between two syncs, so
    reasons are collected as they pass rather than read once.
    """

    def __init__(self, kubelet: Kubelet, interval: float = 0.5) -> None:
        self.kubelet = kubelet
        self.interval = interval
        self.reasons: dict[tuple[str, str], set[str]] = {}
        self.ids: dict[tuple[str, str], list[str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="kubelet-pods")

    def start(self) -> StatusHistory:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        suffix = f"-{self.kubelet.node_name}"
        while not self._stop.wait(self.interval):
            if not self.kubelet.running():
                continue
            try:
                pods = self.kubelet.pods()
            except (OSError, RuntimeError, ValueError):
                continue  # the kubelet is restarting; the next poll will see it
            with self._lock:
                for pod in pods:
                    name = pod["metadata"]["name"].removesuffix(suffix)
                    status = pod.get("status") or {}
                    for cs in [*status.get("initContainerStatuses", []),
                               *status.get("containerStatuses", [])]:
                        self._record((name, cs["name"]), cs)

    def _record(self, key: tuple[str, str], cs: dict[str, Any]) -> None:
        seen = self.reasons.setdefault(key, set())
        for where in ("state", "lastState"):
            for kind, detail in (cs.get(where) or {}).items():
                seen.add(f"{kind}:{detail.get('reason', '')}")
        cid = cs.get("containerID", "")
        ids = self.ids.setdefault(key, [])
        if cid and cid not in ids:
            ids.append(cid)

    def seen(self, pod: str, container: str) -> set[str]:
        """"<state>:<reason>" pairs seen, e.g. "waiting:CrashLoopBackOff"."""
        with self._lock:
            return set(self.reasons.get((pod, container), set()))

    def container_ids(self, pod: str, container: str) -> list[str]:
        """Container IDs in the order first seen (``<runtime>://`` stripped)."""
        with self._lock:
            return [c.split("://", 1)[-1] for c in self.ids.get((pod, container), [])]


class KubeletNode:
    """peapod, the kubelet, the host they change, and what tests read from them."""

    def __init__(self, registry_host: str, pods: dict[str, dict[str, Any]],
                 node_name: str = "peapod-node", gc_flags: tuple[str, ...] = ()) -> None:
        kubelet_binary()  # fail loudly before anything is made
        self.node_name = node_name
        self.pods = pods
        self.host_state = HostState()
        self.env = PodEnv()
        try:
            self.env.peapod.registries_conf.write_text(registries_conf_text([registry_host]))
            self.endpoint = f"unix://{self.env.peapod.socket}"
            self.cgroup_root = f"peapod-kubelet-{secrets.token_hex(3)}"
            self.host = KubeletHost(self.cgroup_root)
            self.kubelet = Kubelet(self.endpoint, self.cgroup_root, node_name,
                                   gc_flags=gc_flags)
        except BaseException:
            self.env.sweep()
            raise
        self.census = Census(
            roots=(self.env.peapod.base,),
            state_dirs=(self.env.peapod.root, self.env.peapod.runroot),
            cgroup_parent=self.cgroup_root, db=self.env.peapod.root / "peapod.db",
            bridge=self.env.bridge, netname=self.env.netname, subnet=self.env.subnet,
            ipam_dir=self.env.data_dir, ignore_pids={os.getpid()})
        self.history = StatusHistory(self.kubelet)
        self.windows: list[Window] = []  # when the tests made CRI calls fail on purpose
        self.before: Snapshot = {}  # the census before the kubelet started

    def start(self) -> None:
        self.start_peapod()
        self.host.prepare()
        self.before = self.census.snapshot()
        for name, pod in self.pods.items():
            self.kubelet.write_manifest(name, pod)
        self.kubelet.start()
        self.history.start()

    def start_peapod(self) -> None:
        self.env.peapod.start()
        assert self.env.peapod.proc is not None
        self.census.ignore_pids.add(self.env.peapod.proc.pid)  # the daemon is no leak

    def teardown(self) -> list[str]:
        """Everything back as found, whatever state the tests left; what stayed."""
        left: list[str] = []
        steps: list[tuple[str, Callable[[], object]]] = [
            ("status poller", self.history.stop),
            ("kubelet", self.kubelet.stop),  # first: its canary would remake its chains
            ("peapod, its pods and network", self.env.sweep),
            ("host", lambda: left.extend(self.host.restore())),
            ("mounts", self._unmount),
            ("kubelet folder", lambda: left.extend(self.kubelet.cleanup())),
            ("ip_forward and portmap chains", self.host_state.restore),
        ]
        for what, step in steps:
            try:
                step()
            except Exception as err:  # the next steps must run all the same
                left.append(f"{what}: {type(err).__name__}: {err}")
        return left

    def _unmount(self) -> None:
        roots = (str(self.env.peapod.base), str(self.kubelet.base))
        points = [e.mount_point for e in parse_mountinfo(MOUNTINFO.read_text())
                  if e.mount_point.startswith(roots)]
        for point in sorted(points, key=len, reverse=True):
            umount_all(Path(point))

    # ---- views ------------------------------------------------------------
    def kpod(self, name: str) -> dict[str, Any] | None:
        """The kubelet's pod made from manifest ``name``."""
        return self.kubelet.pod(name)

    def statuses(self, name: str) -> dict[str, dict[str, Any]]:
        """Container statuses (init ones too) of a pod as the kubelet has them, by name."""
        pod = self.kpod(name) or {}
        status = pod.get("status") or {}
        return {cs["name"]: cs for cs in [*status.get("initContainerStatuses", []),
                                          *status.get("containerStatuses", [])]}

    def crictl_json(self, command: str, *args: str) -> Any:
        return json.loads(crictl(self.endpoint, command, "-o", "json", *args))

    def runtime_pods(self, state: str = "ready") -> dict[str, dict[str, Any]]:
        """peapod's pods (in ``state``, "" for all) by manifest name."""
        items = self.crictl_json("pods", *(("--state", state) if state else ()))["items"]
        return {p["metadata"]["name"].removesuffix(f"-{self.node_name}"): p for p in items}

    def runtime_containers(self) -> list[dict[str, Any]]:
        """Every container peapod has (crictl ps -a)."""
        return list(self.crictl_json("ps", "-a")["containers"])

    def pod_ip(self, pod_id: str) -> str:
        return str(self.crictl_json("inspectp", pod_id)["status"]["network"]["ip"])

    def log_dir(self, name: str) -> Path:
        """The pod's folder in the kubelet's podLogsDir (<ns>_<name>_<uid>)."""
        pod = self.kpod(name)
        assert pod is not None, f"the kubelet has no pod {name}"
        meta = pod["metadata"]
        return (self.kubelet.dirs["pod-logs"]
                / f"{meta['namespace']}_{meta['name']}_{meta['uid']}")
