"""GetContainerEvents and the Stream* lists through peapod's socket, with real runc.

Each subscriber reads its stream on a thread over a channel of its own (a client
that stops reading stalls its whole HTTP/2 connection, so a stuck subscriber must
not share one). Every test ends with every pod removed and nothing left on the host.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from support.container_env import ContainerEnv, container_env
from support.daemon import Peapod, metric_value
from support.images import StandardImages
from support.registry import Registry

from api import api_pb2 as pb
from api import api_pb2_grpc
from cri.handlers.container_events import DROP_GRACE

CREATED, STARTED = pb.CONTAINER_CREATED_EVENT, pb.CONTAINER_STARTED_EVENT
STOPPED, DELETED = pb.CONTAINER_STOPPED_EVENT, pb.CONTAINER_DELETED_EVENT
SUBSCRIBERS = "peapod_container_events_subscribers"
DROPPED = "peapod_container_events_dropped_subscribers_total"


class Subscriber:
    """One GetContainerEvents stream on its own channel; ``read=False`` leaves it unread."""

    def __init__(self, peapod: Peapod, read: bool = True) -> None:
        self.channel = grpc.insecure_channel(f"unix:{peapod.socket}")
        stub = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.call = stub.GetContainerEvents(pb.GetEventsRequest())
        self.events: list[pb.ContainerEventResponse] = []
        self.arrived: list[int] = []  # time.time_ns() at each event's arrival
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        if read:
            self._thread.start()

    def read(self) -> None:
        """Start reading (a subscriber made with ``read=False``)."""
        self._thread.start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.arrived.append(time.time_ns())
                self.events.append(event)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.done.set()

    def kinds(self) -> list[tuple[str, int]]:
        return [(e.container_id, e.container_event_type) for e in self.events]

    def wait(self, count: int, timeout: float = 20) -> None:
        wait_for(lambda: len(self.events) >= count or self.done.is_set(), timeout,
                 f"{count} events (have {self.kinds()})")  # fmt: skip
        assert len(self.events) >= count, (self.kinds(), self.error)

    def close(self) -> None:
        self.call.cancel()
        self.done.wait(5)
        self.channel.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def subscribers(peapod: Peapod) -> float:
    return metric_value(peapod.metrics_text(), SUBSCRIBERS)


def subscribed(peapod: Peapod, *subs: Subscriber, count: int | None = None) -> None:
    """Wait until the daemon holds ``count`` (default: len(subs)) subscriptions."""
    want = len(subs) if count is None else count
    wait_for(lambda: subscribers(peapod) == want, 10, f"{want} subscribers")


def daemon_threads(peapod: Peapod) -> int:
    assert peapod.proc is not None
    return len(os.listdir(f"/proc/{peapod.proc.pid}/task"))


@pytest.fixture(scope="module")
def busybox(test_images: StandardImages) -> str:
    return test_images.busybox.ref


@pytest.fixture(scope="module")
def env(registry: Registry, busybox: str) -> Iterator[ContainerEnv]:
    with container_env(registry, "events", [busybox]) as e:
        yield e


@pytest.fixture(autouse=True)
def clean(env: ContainerEnv) -> Iterator[None]:
    yield
    if env.peapod.proc is None:
        env.peapod.start()
    env.remove_all()
    assert env.containers() == []
    assert env.leftovers() == {}


def run_pod(env: ContainerEnv, annotations: dict[str, str] | None = None,
            labels: dict[str, str] | None = None) -> str:  # fmt: skip
    uid = secrets.token_hex(6)
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"p{uid}", uid=uid, namespace="events"),
        log_directory=str(env.logs / uid), annotations=annotations or {}, labels=labels or {},
    )  # fmt: skip
    cfg.linux.security_context.namespace_options.network = pb.NODE
    return str(env.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60)
               .pod_sandbox_id)  # fmt: skip


def stop_pod(env: ContainerEnv, pod: str) -> None:
    env.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=60)


def remove_pod(env: ContainerEnv, pod: str) -> None:
    env.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=60)


def stop_container(env: ContainerEnv, ctr: str) -> None:
    env.rt.StopContainer(pb.StopContainerRequest(container_id=ctr, timeout=0), timeout=30)


def remove_container(env: ContainerEnv, ctr: str) -> None:
    env.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=ctr), timeout=30)


# ---- one whole lifecycle ------------------------------------------------------------


def test_a_whole_pod_and_container_lifecycle_arrives_in_order(
    env: ContainerEnv, busybox: str
) -> None:
    sub = Subscriber(env.peapod)
    subscribed(env.peapod, sub)
    pod = run_pod(env)
    sub.wait(2)
    wait_go = "until [ -e /tmp/go ]; do sleep 0.02; done; exit 3"
    ctr = env.create(pod, busybox, ["sh", "-c", wait_go])
    sub.wait(3)
    env.start(ctr)
    sub.wait(4)
    assert env.status(ctr).state == pb.CONTAINER_RUNNING
    env.exec(ctr, ["touch", "/tmp/go"])  # now it exits by itself
    sub.wait(5)
    stop_container(env, ctr)  # already exited: no new event
    remove_container(env, ctr)
    sub.wait(6)
    stop_pod(env, pod)
    sub.wait(7)
    remove_pod(env, pod)
    sub.wait(8)
    time.sleep(0.3)  # nothing else comes
    sub.close()
    lags = [(got - e.created_at) / 1e6 for e, got in zip(sub.events, sub.arrived, strict=True)]
    exit_lag = (sub.arrived[4] - sub.events[4].containers_statuses[0].finished_at) / 1e6
    print(f"event latency, publish to receipt (ms): {[round(x, 2) for x in lags]}; "
          f"container exit (conmon's exit file) to receipt: {exit_lag:.1f} ms")

    assert sub.kinds() == [
        (pod, CREATED), (pod, STARTED), (ctr, CREATED), (ctr, STARTED), (ctr, STOPPED),
        (ctr, DELETED), (pod, STOPPED), (pod, DELETED),
    ]  # fmt: skip
    stamps = [e.created_at for e in sub.events]
    assert all(a < b for a, b in itertools.pairwise(stamps)), stamps
    for event in sub.events:
        st = event.pod_sandbox_status
        assert st.id == pod and st.metadata.namespace == "events" and st.created_at > 0
    states = [e.pod_sandbox_status.state for e in sub.events]
    assert states == [pb.SANDBOX_READY] * 6 + [pb.SANDBOX_NOTREADY] * 2
    ctr_states = [[(c.id, c.state) for c in e.containers_statuses] for e in sub.events]
    assert ctr_states == [
        [], [], [(ctr, pb.CONTAINER_CREATED)], [(ctr, pb.CONTAINER_RUNNING)],
        [(ctr, pb.CONTAINER_EXITED)], [], [], [],
    ]  # fmt: skip
    exited = sub.events[4].containers_statuses[0]
    assert exited.exit_code == 3 and exited.reason == "Error" and exited.finished_at > 0
    assert exited.metadata.name == "c" and exited.image.image == busybox
    assert sub.events[4].created_at >= exited.finished_at


# ---- several subscribers, and one that falls behind ------------------------------------


def test_subscribers_all_get_everything_and_one_that_does_not_read_is_dropped(
    registry: Registry, busybox: str
) -> None:
    """subscriber_queue 4: a subscriber that stops reading is cut off, the others go on.

    A client that does not read still takes in what HTTP/2 flow control lets through
    (a few MiB), so the events are made big: the pod's 200 KiB annotation is in each.
    """
    with container_env(registry, "evq", [busybox],
                       {"events": {"subscriber_queue": 4}}) as small:  # fmt: skip
        peapod = small.peapod
        a, b = Subscriber(peapod), Subscriber(peapod)
        late = Subscriber(peapod, read=False)  # reads once it was dropped
        stuck = Subscriber(peapod, read=False)  # never reads
        subscribed(peapod, a, b, late, stuck)
        big = {"big": "x" * (200 << 10)}

        def cycle() -> float:
            """Run, stop and remove a pod (4 events); how long the runtime took."""
            start = time.monotonic()
            pod = run_pod(small, annotations=big)
            stop_pod(small, pod)
            remove_pod(small, pod)
            return time.monotonic() - start

        took = []
        while metric_value(peapod.metrics_text(), DROPPED) < 2:
            took.append(cycle())
            assert len(took) < 100, "the non-readers were never dropped"
        late.read()  # within DROP_GRACE: it gets what was buffered, then the reason
        took += [cycle() for _ in range(3)]  # the runtime and the readers go on
        expected = 4 * len(took)
        a.wait(expected)
        b.wait(expected)
        assert a.kinds() == b.kinds() and len(a.kinds()) == expected
        assert [e.created_at for e in a.events] == [e.created_at for e in b.events]
        assert max(took) < 10, f"a pod's run, stop and remove took up to {max(took):.1f}s"

        assert late.done.wait(10) and late.error is not None
        assert late.error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "fell 4 events behind" in (late.error.details() or "")
        assert 0 < len(late.kinds()) < expected
        assert late.kinds() == a.kinds()[: len(late.kinds())]  # a prefix, in order

        # The stuck one's call is reset DROP_GRACE after the drop: no thread waits on it.
        wait_for(lambda: subscribers(peapod) == 2, DROP_GRACE + 10, "the stuck stream's reset")
        stuck.read()
        assert stuck.done.wait(10) and stuck.error is not None
        assert stuck.error.code() == grpc.StatusCode.CANCELLED
        assert len(stuck.kinds()) < expected
        log = small.peapod.log_path.read_text()
        assert log.count("event subscriber fell behind; disconnected") == 2
        assert "resetting an event subscriber that reads nothing" in log
        for sub in (a, b, late, stuck):
            sub.close()
        subscribed(peapod, count=0)


# ---- restart ----------------------------------------------------------------------------


def test_a_restart_replays_nothing_and_reports_an_exit_from_the_downtime_once(
    env: ContainerEnv, busybox: str
) -> None:
    before = Subscriber(env.peapod)
    subscribed(env.peapod, before)
    pod = run_pod(env)
    ctr = env.run(pod, busybox, ["sleep", "1000"])
    quiet = env.run(pod, busybox, ["sleep", "1000"], name="quiet")
    before.wait(6)
    verbose = env.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=ctr, verbose=True))
    pid = int(json.loads(verbose.info["info"])["pid"])

    env.peapod.stop()  # SIGTERM: the stream ends, the containers run on
    assert before.done.wait(10)
    assert before.error is not None and before.error.code() == grpc.StatusCode.UNAVAILABLE
    before.close()
    os.kill(pid, signal.SIGKILL)  # the container dies while the daemon is down
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10, "the container's death")
    time.sleep(0.5)  # conmon writes the exit file

    env.peapod.start()
    after, second = Subscriber(env.peapod), Subscriber(env.peapod)
    after.wait(1)
    second.wait(1)
    time.sleep(1.0)  # nothing else comes
    assert after.kinds() == [(ctr, STOPPED)] == second.kinds()
    statuses = {c.id: c for c in after.events[0].containers_statuses}
    assert statuses[ctr].state == pb.CONTAINER_EXITED and statuses[ctr].exit_code == 137
    assert statuses[quiet].state == pb.CONTAINER_RUNNING
    assert after.events[0].created_at > before.events[-1].created_at

    remove_container(env, quiet)  # live events follow on the same streams
    after.wait(3)
    assert after.kinds()[1:] == [(quiet, STOPPED), (quiet, DELETED)]
    for sub in (after, second):
        sub.close()


# ---- cancel ---------------------------------------------------------------------------------


def test_a_cancelled_subscription_leaves_no_thread_or_queue(env: ContainerEnv) -> None:
    def open_and_cancel(count: int) -> None:
        subs = [Subscriber(env.peapod) for _ in range(count)]
        subscribed(env.peapod, *subs)
        for sub in subs:
            sub.close()
            assert sub.error is not None and sub.error.code() == grpc.StatusCode.CANCELLED
        subscribed(env.peapod, count=0)

    open_and_cancel(6)  # the rpc pool grows to serve 6 streams at once, and stays
    time.sleep(0.3)
    threads = daemon_threads(env.peapod)
    for _ in range(3):
        open_and_cancel(6)
    time.sleep(0.3)
    assert daemon_threads(env.peapod) <= threads
    pod = run_pod(env)  # events published with no subscriber go nowhere
    remove_pod(env, pod)


def test_events_disabled_end_the_stream_at_once_with_ok() -> None:
    peapod = Peapod(config={"events": {"enable": False}})
    try:
        peapod.start()
        call = peapod.runtime.GetContainerEvents(pb.GetEventsRequest(), timeout=10)
        assert list(call) == []
        assert call.code() == grpc.StatusCode.OK
    finally:
        peapod.cleanup()


# ---- Stream* lists ----------------------------------------------------------------------------


def _streamed(replies: Any, field: str) -> list[Any]:
    replies = list(replies)
    assert all(len(getattr(r, field)) >= 1 for r in replies)
    return [item for r in replies for item in getattr(r, field)]


def test_stream_lists_equal_the_unary_lists(env: ContainerEnv, busybox: str) -> None:
    rt, img = env.rt, env.peapod.images
    pods = [run_pod(env, labels={"app": "web" if n < 2 else "db"}) for n in range(3)]
    ctrs = [env.run(pods[0], busybox, ["sleep", "1000"], name="a", labels={"t": "1"}),
            env.create(pods[0], busybox, ["true"], name="b"),
            env.run(pods[1], busybox, ["sleep", "1000"], name="a", labels={"t": "1"})]
    stop_pod(env, pods[2])
    for flt in [None, pb.PodSandboxFilter(id=pods[1][:10]), pb.PodSandboxFilter(id="f" * 64),
                pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY)),
                pb.PodSandboxFilter(label_selector={"app": "web"})]:  # fmt: skip
        unary = list(rt.ListPodSandbox(pb.ListPodSandboxRequest(filter=flt)).items)
        streamed = _streamed(rt.StreamPodSandboxes(pb.StreamPodSandboxesRequest(filter=flt)),
                             "pod_sandboxes")  # fmt: skip
        assert streamed == unary, flt
    assert len(list(rt.ListPodSandbox(pb.ListPodSandboxRequest()).items)) == 3
    for cflt in [None, pb.ContainerFilter(id=ctrs[1]), pb.ContainerFilter(pod_sandbox_id=pods[0]),
                 pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_CREATED)),
                 pb.ContainerFilter(label_selector={"t": "1"}),
                 pb.ContainerFilter(pod_sandbox_id=pods[2])]:  # fmt: skip
        unary_c = list(rt.ListContainers(pb.ListContainersRequest(filter=cflt)).containers)
        streamed_c = _streamed(rt.StreamContainers(pb.StreamContainersRequest(filter=cflt)),
                               "containers")  # fmt: skip
        assert streamed_c == unary_c, cflt
    assert len(env.containers()) == 3
    for ref in ["", busybox, "example.invalid/none:1"]:
        iflt = pb.ImageFilter(image=pb.ImageSpec(image=ref)) if ref else None
        unary_i = list(img.ListImages(pb.ListImagesRequest(filter=iflt)).images)
        streamed_i = _streamed(img.StreamImages(pb.StreamImagesRequest(filter=iflt)), "images")
        assert streamed_i == unary_i and len(unary_i) == (0 if "invalid" in ref else 1)
    empty = rt.StreamContainers(pb.StreamContainersRequest(
        filter=pb.ContainerFilter(id="0" * 64)))  # fmt: skip
    assert list(empty) == [] and empty.code() == grpc.StatusCode.OK  # no message at all
