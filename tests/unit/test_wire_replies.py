"""Replies put together in wire format decode to what protobuf would have built."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from api import api_pb2 as pb
from api import api_pb2_grpc
from base.db import Database
from cri import routes, servicers
from cri.convert import container as container_convert
from cri.convert import sandbox as sandbox_convert
from cri.convert.item_cache import ItemCache
from cri.convert.wire import Encoded, field, serializer, varint
from cri.handlers import container_status, sandbox_status
from oci.container.record import EXITED, RUNNING, ContainerRecord
from oci.container.store import ContainerStore
from sandbox.pod_config import PodMetadata
from sandbox.record import READY, SandboxRecord
from sandbox.store import SandboxStore


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, 2**35 + 7])
def test_varint_and_field_match_protobuf(n: int) -> None:
    assert b"\x08" + varint(n) == pb.UInt64Value(value=n).SerializeToString() or n == 0
    payload = b"x" * (n % 20000 or 1)
    assert field(1, payload) == pb.ImageSpec(image=payload.decode()).SerializeToString()


def test_encoded_items_are_the_reply_and_are_encoded_once_per_snapshot() -> None:
    encodes: list[str] = []

    class Counted:
        def __init__(self, rec: SandboxRecord) -> None:
            self.msg = sandbox_convert.to_pb_sandbox(rec)

        def SerializeToString(self) -> bytes:
            encodes.append(self.msg.id)
            return self.msg.SerializeToString()

    cache: ItemCache[SandboxRecord, Counted] = ItemCache(Counted)
    a, b = _pod("a"), _pod("b")
    data = cache.encoded([a, b], 2, 1)
    want = pb.ListPodSandboxResponse(items=[sandbox_convert.to_pb_sandbox(r) for r in (a, b)])
    assert pb.ListPodSandboxResponse.FromString(data) == want
    assert cache.encoded([a, b], 2, 1) == data and len(encodes) == 2
    a2 = replace(a, labels={"changed": "yes"})
    again = pb.ListPodSandboxResponse.FromString(cache.encoded([a2, b], 2, 1))
    assert again.items[0].labels == {"changed": "yes"} and encodes[2:] == [a.id]
    assert cache.encoded([], 2, 1) == b""


def test_the_serializer_sends_an_encoded_reply_as_it_is_and_checks_its_type() -> None:
    ser = serializer(pb.ListContainersResponse)
    assert ser(Encoded(pb.ListContainersResponse, b"\x0a\x00")) == b"\x0a\x00"
    msg = pb.ListContainersResponse(containers=[pb.Container(id="x")])
    assert ser(msg) == msg.SerializeToString()
    with pytest.raises(TypeError, match="encoded ListPodSandboxResponse given as a ListCont"):
        ser(Encoded(pb.ListPodSandboxResponse, b""))


def test_registered_methods_are_the_generated_ones_with_passing_serializers() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            pass

        def add_registered_method_handlers(self, name: str, handlers: Any) -> None:
            self.handlers[name] = handlers

    ours, generated = Recorder(), Recorder()
    servicers.register(ours, routes.RUNTIME_HANDLERS, routes.IMAGE_HANDLERS, None)  # type: ignore[arg-type]
    rt = servicers.build("RuntimeService", routes.RUNTIME_HANDLERS, None)
    img = servicers.build("ImageService", routes.IMAGE_HANDLERS, None)
    api_pb2_grpc.add_RuntimeServiceServicer_to_server(rt, generated)
    api_pb2_grpc.add_ImageServiceServicer_to_server(img, generated)
    assert ours.handlers.keys() == generated.handlers.keys()
    for service, theirs in generated.handlers.items():
        mine = ours.handlers[service]
        assert mine.keys() == theirs.keys()
        methods = pb.DESCRIPTOR.services_by_name[service.rsplit(".", 1)[-1]].methods_by_name
        for name, h in theirs.items():
            m = mine[name]
            reply = getattr(pb, methods[name].output_type.name)()  # theirs refuses another type
            assert m.request_deserializer == h.request_deserializer
            assert (m.response_streaming, m.request_streaming) == (
                h.response_streaming, h.request_streaming)
            assert (m.unary_unary is None, m.unary_stream is None) == (
                h.unary_unary is None, h.unary_stream is None)
            assert m.response_serializer(reply) == h.response_serializer(reply)


@pytest.fixture
def services(tmp_path: Path) -> Any:
    db = Database(tmp_path / "state.db")
    pods, ctrs = SandboxStore(db), ContainerStore(db)
    pod = replace(_pod("p"), ips=("10.0.0.2", "fd00::2"))
    pods.put(pod)
    ctrs.insert(ContainerRecord(
        id="c" * 64, sandbox_id=pod.id, name="k8s_c_p", metadata_name="c", attempt=1,
        state=RUNNING, created_at=5, runtime_handler="runc", image="busybox",
        image_id="sha256:1", image_ref="sha256:1", bundle="/b", storage_dir="/s",
        log_path="/l", labels={"tier": "1"}, annotations={"a": "b"},
        mounts=[{"container_path": "/m", "host_path": "/h", "readonly": True,
                 "selinux_relabel": False, "propagation": "PRIVATE",
                 "recursive_read_only": False, "image": None}],
        resources={"cpu_shares": 2}, user={"uid": 1, "gid": 2, "additional_gids": [3]},
    ))  # fmt: skip
    return SimpleNamespace(
        pods=SimpleNamespace(store=pods, list=pods.list, get=pods.resolve),
        containers=SimpleNamespace(store=ctrs, status=ctrs.find, spec=lambda rec: {"x": 1},
                                   list=lambda flt: ctrs.visible()),
    )


def test_container_status_decodes_to_the_converted_status_and_follows_changes(
    services: Any,
) -> None:
    store = services.containers.store
    req = pb.ContainerStatusRequest(container_id="c" * 64)
    reply = container_status.container_status(services, req, None)  # type: ignore[arg-type]
    rec = store.find("c" * 64)
    assert reply.decode() == pb.ContainerStatusResponse(status=container_convert.to_pb_status(rec))
    store.update(rec.id, lambda c: replace(c, state=EXITED, exit_code=3, reason="Error"))
    st = container_status.container_status(services, req, None).decode().status  # type: ignore[arg-type]
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 3, "Error")
    verbose = container_status.container_status(
        services, pb.ContainerStatusRequest(container_id="c" * 64, verbose=True), None)  # type: ignore[arg-type]
    assert verbose.status == st and '"runtimeSpec": {"x": 1}' in verbose.info["info"]


def test_pod_status_decodes_to_the_converted_status_with_a_fresh_timestamp(
    services: Any,
) -> None:
    rec = services.pods.store.list(None)[0]
    req = pb.PodSandboxStatusRequest(pod_sandbox_id=rec.id)
    first = sandbox_status.pod_sandbox_status(services, req, None).decode()  # type: ignore[arg-type]
    second = sandbox_status.pod_sandbox_status(services, req, None).decode()  # type: ignore[arg-type]
    assert first.status == sandbox_convert.to_pb_status(rec)
    assert first.status.network.additional_ips[0].ip == "fd00::2"
    assert 0 < first.timestamp <= second.timestamp and not first.info
    verbose = sandbox_status.pod_sandbox_status(
        services, pb.PodSandboxStatusRequest(pod_sandbox_id=rec.id, verbose=True), None)  # type: ignore[arg-type]
    assert verbose.status == first.status and "info" in verbose.info


def test_lists_decode_to_the_converted_items(services: Any) -> None:
    pods = sandbox_status.list_pod_sandbox(
        services, pb.ListPodSandboxRequest(), None).decode()  # type: ignore[arg-type]
    ctrs = container_status.list_containers(
        services, pb.ListContainersRequest(), None).decode()  # type: ignore[arg-type]
    assert list(pods.items) == [sandbox_convert.to_pb_sandbox(r)
                                for r in services.pods.store.list(None)]
    assert list(ctrs.containers) == [container_convert.to_pb_container(r)
                                     for r in services.containers.store.visible()]
    none = container_status.list_containers(services, pb.ListContainersRequest(
        filter=pb.ContainerFilter(state=pb.ContainerStateValue(state=99))), None)  # type: ignore[arg-type]
    assert none.data == b""


def _pod(name: str) -> SandboxRecord:
    return SandboxRecord(id=name * 64, name=f"k8s_{name}", metadata=PodMetadata(name, "u", "n"),
                         state=READY, created_at=1, labels={"app": name})
