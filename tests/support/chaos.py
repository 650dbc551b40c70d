"""A seeded CRI workload from several threads while the daemon is killed (-9) and restarted.

Each worker owns its pods (host network or the test CNI network, some with a host
port, PID namespace per pod or per container) and their busybox containers; it runs,
creates, starts, execs, stops and removes at random (its own ``random.Random`` from
the seed). A killer thread SIGKILLs the daemon at random moments and starts it again.
A call cut off by the kill has an unknown outcome: the worker retries a RunPodSandbox
once with the same config (as the kubelet does) and forgets nothing it was told.

``Chaos.run()`` then, with the daemon up: checks every container a worker started and
never stopped is RUNNING with its process alive (and every container the daemon lists
as RUNNING has a live process), removes everything through the CRI, and takes the
``support.census`` leak census against the snapshot before the workload.
"""

from __future__ import annotations

import collections
import contextlib
import json
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from api import api_pb2 as pb
from api import api_pb2_grpc as pbg
from conmon import procs
from support.census import Census, leaks
from support.pods import PodEnv

BAD = ("INTERNAL", "UNKNOWN")
CUT_OFF = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")  # the daemon died under the call
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50),
                   ("grpc.min_reconnect_backoff_ms", 50),
                   ("grpc.max_reconnect_backoff_ms", 300)]


# What a worker may do to a container it believes in each state (repeats weigh).
CONTAINER_OPS = {"created": ["start"] * 3, "running": ["exec"] * 3 + ["stop"],
                 "unsure": ["status"], "stopping": ["remove"], "removing": ["remove"]}


@dataclass
class Ctr:
    """What a worker knows of one of its containers."""

    id: str
    state: str  # created, running, unsure (start cut off), stopping, removing


@dataclass
class Pod:
    """What a worker knows of one of its pods."""

    id: str
    config: pb.PodSandboxConfig
    pid_pod: bool
    retried: bool = False  # RunPodSandbox answered on the kubelet-style retry
    containers: dict[str, Ctr] = field(default_factory=dict)
    stopping: bool = False


@dataclass
class Result:
    """Figures and findings of one run."""

    seed: int
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    kills: int = 0
    errors: list[str] = field(default_factory=list)  # INTERNAL/UNKNOWN, with the call
    lost: list[str] = field(default_factory=list)  # known objects gone or not running
    leaks: dict[str, list[str]] = field(default_factory=dict)
    cleanup: list[str] = field(default_factory=list)  # removal through the CRI failing
    samples: dict[str, str] = field(default_factory=dict)  # "op CODE" -> its first message
    seconds: float = 0.0

    def total(self) -> int:
        return sum(self.ops.values())

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "ops": self.total(), "by_op": dict(self.ops),
                "codes": dict(self.codes), "kills": self.kills, "errors": self.errors,
                "lost": self.lost, "leaks": self.leaks, "cleanup": self.cleanup,
                "samples": self.samples,
                "seconds": round(self.seconds, 1)}

    def report(self) -> str:
        return json.dumps(self.as_dict(), indent=1, sort_keys=True)


class Chaos:
    """One seeded run against ``env`` (a started ``PodEnv`` whose daemon has ``image``)."""

    def __init__(self, env: PodEnv, image: str, seed: int, *, ops: int = 0,
                 seconds: float = 0.0, workers: int = 3,
                 kill_after: tuple[float, float] = (2.0, 6.0)) -> None:
        self.env, self.image, self.seed = env, image, seed
        self.max_ops, self.max_seconds = ops, seconds
        self.workers, self.kill_after = workers, kill_after
        self.result = Result(seed)
        self.census = Census.for_pod_env(env)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._up = threading.Event()
        self._up.set()
        self._deadline = 0.0
        self._pods: list[dict[str, Pod]] = []
        self._channel = grpc.insecure_channel(f"unix:{env.peapod.socket}",
                                              options=CHANNEL_OPTIONS)
        self.rt = pbg.RuntimeServiceStub(self._channel)

    # ---- the run -----------------------------------------------------------
    def run(self) -> Result:
        start = time.monotonic()
        self._deadline = start + self.max_seconds if self.max_seconds else float("inf")
        self.census.ignore_pids.add(self._daemon_pid())
        self._warm_up()
        before = self.census.snapshot()
        threads = [threading.Thread(target=self._worker, args=(i,), name=f"chaos-{i}")
                   for i in range(self.workers)]
        killer = threading.Thread(target=self._killer, name="chaos-killer")
        for t in (*threads, killer):
            t.start()
        for t in threads:
            t.join()
        self._done.set()
        killer.join()
        self._ensure_up()
        self._verify_survivors()
        self._remove_everything()
        self.census.ignore_pids.add(self._daemon_pid())
        self.result.leaks = leaks(before, self.census.snapshot())
        self._channel.close()
        self.result.seconds = time.monotonic() - start
        return self.result

    def _warm_up(self) -> None:
        """One pod, container and exec, removed: the daemon's lazily made dirs exist."""
        cfg = self.env.config("warm-up", pid=pb.POD)
        pod = self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60)
        ctr = self.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod.pod_sandbox_id, sandbox_config=cfg, config=pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="warm-up"),
                image=pb.ImageSpec(image=self.image), command=["sleep", "60"])), timeout=60)
        self.rt.StartContainer(pb.StartContainerRequest(container_id=ctr.container_id),
                               timeout=30)
        self.rt.ExecSync(pb.ExecSyncRequest(container_id=ctr.container_id, cmd=["true"]),
                         timeout=30)
        self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.pod_sandbox_id),
                                 timeout=60)

    def _more(self) -> bool:
        with self._lock:
            if self.max_ops and self.result.total() >= self.max_ops:
                return False
        return time.monotonic() < self._deadline

    def _daemon_pid(self) -> int:
        proc = self.env.peapod.proc
        assert proc is not None
        return proc.pid

    # ---- the killer --------------------------------------------------------
    def _killer(self) -> None:
        rng = random.Random(self.seed * 7919)
        while not self._done.wait(rng.uniform(*self.kill_after)):
            self._up.clear()
            self.env.peapod.stop(signal.SIGKILL)
            with self._lock:
                self.result.kills += 1
            time.sleep(rng.uniform(0.0, 0.5))
            self._ensure_up()

    def _ensure_up(self) -> None:
        if self.env.peapod.proc is None:
            self.env.peapod.start(timeout=60)
        self._up.set()

    # ---- calls -------------------------------------------------------------
    def _call(self, op: str, method: str, request: Any, timeout: float = 30) -> tuple[str, Any]:
        """(code name, response or None); the code is counted under ``op``."""
        try:
            reply = getattr(self.rt, method)(request, timeout=timeout)
            code = "OK"
        except grpc.RpcError as exc:
            reply, code = None, exc.code().name
            with self._lock:
                self.result.samples.setdefault(f"{op} {code}", str(exc.details())[:300])
            if code in BAD:
                with self._lock:
                    self.result.errors.append(f"{op}: {code} {exc.details()} <- "
                                              f"{str(request)[:300]!r}")
        with self._lock:
            self.result.ops[op] += 1
            self.result.codes[f"{op} {code}"] += 1
        if code in CUT_OFF:
            self._up.wait(60)
        return code, reply

    def _lost(self, what: str) -> None:
        with self._lock:
            self.result.lost.append(what)

    # ---- one worker --------------------------------------------------------
    def _worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        pods: dict[str, Pod] = {}
        with self._lock:
            self._pods.append(pods)
        while self._more():
            # (op, pod, container) candidates, repeated for weight
            choices: list[tuple[str, Pod | None, Ctr | None]] = []
            if len(pods) < 3:
                choices += [("run_pod", None, None)] * 3
            for pod in pods.values():
                if pod.stopping:
                    choices += [("remove_pod", pod, None)] * 2
                    continue
                choices += [("stop_pod", pod, None), ("remove_pod", pod, None),
                            ("list", pod, None)]
                if len(pod.containers) < 2:
                    choices += [("create", pod, None)] * 3
                for ctr in pod.containers.values():
                    choices += [(op, pod, ctr) for op in CONTAINER_OPS[ctr.state]]
            op, pod, ctr = rng.choice(choices)
            if pod is None:
                self._run_pod(rng, pods)
            elif ctr is None:
                getattr(self, f"_{op}")(rng, pods, pod)
            else:
                getattr(self, f"_{op}")(rng, pod, ctr)

    def _run_pod(self, rng: random.Random, pods: dict[str, Pod]) -> None:
        host_network = rng.random() < 0.3
        pid_pod = rng.random() < 0.5
        cfg = self.env.config("chaos", pid=pb.POD if pid_pod else pb.CONTAINER,
                              host_network=host_network)
        if not host_network and rng.random() < 0.4:
            cfg.port_mappings.append(pb.PortMapping(
                protocol=pb.TCP, container_port=80, host_port=rng.randrange(30000, 32768)))
        for attempt in range(2):  # a cut-off call is retried once, like the kubelet's
            code, reply = self._call("RunPodSandbox", "RunPodSandbox",
                                     pb.RunPodSandboxRequest(config=cfg), timeout=60)
            if code == "OK":
                pods[reply.pod_sandbox_id] = Pod(reply.pod_sandbox_id, cfg, pid_pod, attempt > 0)
                self.census.seen_pods.add(reply.pod_sandbox_id)
                return
            if code not in CUT_OFF:
                return

    def _create(self, rng: random.Random, pods: dict[str, Pod], pod: Pod) -> None:
        name = f"c{rng.randrange(1 << 30):x}"
        cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                 image=pb.ImageSpec(image=self.image),
                                 command=["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"])
        # As the kubelet does: the pod's PID namespace only where the pod has one.
        cfg.linux.security_context.namespace_options.pid = pb.POD if pod.pid_pod else pb.CONTAINER
        code, reply = self._call("CreateContainer", "CreateContainer", pb.CreateContainerRequest(
            pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config), timeout=60)
        if code == "OK":
            pod.containers[reply.container_id] = Ctr(reply.container_id, "created")
        elif code in ("NOT_FOUND", "FAILED_PRECONDITION"):
            how = "on the retry of a cut-off RunPodSandbox" if pod.retried else "at once"
            net = "host" if pod.config.linux.security_context.namespace_options.network else "CNI"
            self._lost(f"pod {pod.id} (pid {'POD' if pod.pid_pod else 'CONTAINER'}, {net} "
                       f"network), ready {how}, never stopped: CreateContainer {code}")
            pod.stopping = True

    def _start(self, rng: random.Random, pod: Pod, ctr: Ctr) -> None:
        code, _ = self._call("StartContainer", "StartContainer",
                             pb.StartContainerRequest(container_id=ctr.id))
        ctr.state = {"OK": "running", "NOT_FOUND": "removing"}.get(
            code, "unsure" if code in CUT_OFF else "stopping")
        if code == "NOT_FOUND":
            self._lost(f"container {ctr.id} not found by StartContainer")

    def _exec(self, rng: random.Random, pod: Pod, ctr: Ctr) -> None:
        word = f"w{rng.randrange(1000)}"
        code, reply = self._call("ExecSync", "ExecSync", pb.ExecSyncRequest(
            container_id=ctr.id, cmd=["echo", word], timeout=10))
        if code == "OK" and (reply.exit_code, reply.stdout) != (0, f"{word}\n".encode()):
            self._lost(f"exec in {ctr.id}: exit {reply.exit_code} {reply.stdout!r}")
        elif code in ("NOT_FOUND", "FAILED_PRECONDITION"):
            self._lost(f"container {ctr.id}, believed running: ExecSync {code}")
            ctr.state = "stopping"

    def _stop(self, rng: random.Random, pod: Pod, ctr: Ctr) -> None:
        ctr.state = "stopping"
        self._call("StopContainer", "StopContainer",
                   pb.StopContainerRequest(container_id=ctr.id, timeout=rng.choice([0, 2])))

    def _remove(self, rng: random.Random, pod: Pod, ctr: Ctr) -> None:
        ctr.state = "removing"
        code, _ = self._call("RemoveContainer", "RemoveContainer",
                             pb.RemoveContainerRequest(container_id=ctr.id))
        if code in ("OK", "NOT_FOUND"):
            del pod.containers[ctr.id]

    def _status(self, rng: random.Random, pod: Pod, ctr: Ctr) -> None:
        code, reply = self._call("ContainerStatus", "ContainerStatus",
                                 pb.ContainerStatusRequest(container_id=ctr.id))
        if code == "OK":
            ctr.state = {pb.CONTAINER_CREATED: "created", pb.CONTAINER_RUNNING: "running"}.get(
                reply.status.state, "stopping")
        elif code == "NOT_FOUND":
            self._lost(f"container {ctr.id} not found by ContainerStatus")
            del pod.containers[ctr.id]

    def _list(self, rng: random.Random, pods: dict[str, Pod], pod: Pod) -> None:
        code, reply = self._call("ListContainers", "ListContainers", pb.ListContainersRequest(
            filter=pb.ContainerFilter(pod_sandbox_id=pod.id)))
        if code != "OK":
            return
        listed = {c.id: c.state for c in reply.containers}
        for ctr in pod.containers.values():
            if ctr.state in ("created", "running") and ctr.id not in listed:
                self._lost(f"container {ctr.id} ({ctr.state}) missing from ListContainers")

    def _stop_pod(self, rng: random.Random, pods: dict[str, Pod], pod: Pod) -> None:
        pod.stopping = True
        for ctr in pod.containers.values():
            ctr.state = "stopping"
        self._call("StopPodSandbox", "StopPodSandbox",
                   pb.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)

    def _remove_pod(self, rng: random.Random, pods: dict[str, Pod], pod: Pod) -> None:
        pod.stopping = True
        for ctr in pod.containers.values():
            ctr.state = "removing"
        code, _ = self._call("RemovePodSandbox", "RemovePodSandbox",
                             pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
        if code in ("OK", "NOT_FOUND"):
            del pods[pod.id]

    # ---- after the workload -----------------------------------------------
    def _verify_survivors(self) -> None:
        believed = {c.id for pods in self._pods for p in pods.values() if not p.stopping
                    for c in p.containers.values() if c.state == "running"}
        listed = self.rt.ListContainers(pb.ListContainersRequest(), timeout=30).containers
        running = {c.id for c in listed if c.state == pb.CONTAINER_RUNNING}
        for ctr_id in sorted(believed - running):
            self._lost(f"container {ctr_id}, started and never stopped, is not RUNNING")
        for ctr_id in sorted(running):
            reply = self.rt.ContainerStatus(pb.ContainerStatusRequest(
                container_id=ctr_id, verbose=True), timeout=30)
            pid = int(json.loads(reply.info["info"]).get("pid") or 0)
            if not pid or not procs.is_alive(pid):
                self._lost(f"container {ctr_id} is RUNNING but its process {pid} is gone")

    def _remove_everything(self) -> None:
        pods = self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items
        self.census.seen_pods.update(p.id for p in pods)
        for pod in pods:
            for method, req in (("StopPodSandbox", pb.StopPodSandboxRequest),
                                ("RemovePodSandbox", pb.RemovePodSandboxRequest)):
                try:
                    getattr(self.rt, method)(req(pod_sandbox_id=pod.id), timeout=60)
                except grpc.RpcError as exc:
                    self.result.cleanup.append(f"{method} {pod.id}: {exc.code().name} "
                                               f"{exc.details()}")
        with contextlib.suppress(grpc.RpcError):
            left = self.rt.ListContainers(pb.ListContainersRequest(), timeout=30).containers
            self.result.cleanup += [f"container {c.id} listed after its pod's removal"
                                    for c in left]
