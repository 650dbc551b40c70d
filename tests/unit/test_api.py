"""The committed CRI stubs are fresh and expose the upstream runtime.v1 surface."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from api import api_pb2, api_pb2_grpc, generate

# Every rpc of kubernetes/cri-api runtime.v1 at 791729b, in declaration order,
# mapped to True when the server streams its responses.
RUNTIME_RPCS: dict[str, bool] = {
    "Version": False,
    "RunPodSandbox": False,
    "StopPodSandbox": False,
    "RemovePodSandbox": False,
    "PodSandboxStatus": False,
    "ListPodSandbox": False,
    "StreamPodSandboxes": True,
    "CreateContainer": False,
    "StartContainer": False,
    "StopContainer": False,
    "RemoveContainer": False,
    "ListContainers": False,
    "StreamContainers": True,
    "ContainerStatus": False,
    "UpdateContainerResources": False,
    "ReopenContainerLog": False,
    "ExecSync": False,
    "Exec": False,
    "Attach": False,
    "PortForward": False,
    "ContainerStats": False,
    "ListContainerStats": False,
    "StreamContainerStats": True,
    "PodSandboxStats": False,
    "ListPodSandboxStats": False,
    "StreamPodSandboxStats": True,
    "UpdateRuntimeConfig": False,
    "Status": False,
    "CheckpointContainer": False,
    "CheckpointPod": False,
    "RestorePod": False,
    "GetContainerEvents": True,
    "ListMetricDescriptors": False,
    "ListPodSandboxMetrics": False,
    "StreamPodSandboxMetrics": True,
    "RuntimeConfig": False,
    "UpdatePodSandboxResources": False,
}

IMAGE_RPCS: dict[str, bool] = {
    "ListImages": False,
    "StreamImages": True,
    "ImageStatus": False,
    "PullImage": False,
    "RemoveImage": False,
    "ImageFsInfo": False,
}


def test_stubs_match_fresh_generation() -> None:
    assert generate.stale_stubs() == [], "run `python -m api.generate` and commit the stubs"


def test_package_name() -> None:
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
    assert api_pb2.DESCRIPTOR.name == "api/api.proto"


@pytest.mark.parametrize(
    ("service", "expected"),
    [("RuntimeService", RUNTIME_RPCS), ("ImageService", IMAGE_RPCS)],
)
def test_service_rpcs(service: str, expected: dict[str, bool]) -> None:
    svc = api_pb2.DESCRIPTOR.services_by_name[service]
    got = {m.name: m.server_streaming for m in svc.methods}
    assert list(got) == list(expected)
    assert got == expected
    assert not any(m.client_streaming for m in svc.methods)


def test_rpc_counts() -> None:
    assert len(RUNTIME_RPCS) == 37
    assert len(IMAGE_RPCS) == 6


def test_grpc_stubs_exist() -> None:
    for name in ("RuntimeService", "ImageService"):
        assert hasattr(api_pb2_grpc, f"{name}Stub")
        assert hasattr(api_pb2_grpc, f"{name}Servicer")
        assert hasattr(api_pb2_grpc, f"add_{name}Servicer_to_server")


@pytest.mark.parametrize(
    ("message", "field", "number", "type_"),
    [
        ("PodSandboxConfig", "metadata", 1, FieldDescriptor.TYPE_MESSAGE),
        ("PodSandboxConfig", "linux", 8, FieldDescriptor.TYPE_MESSAGE),
        ("ContainerConfig", "image", 2, FieldDescriptor.TYPE_MESSAGE),
        ("ContainerConfig", "command", 3, FieldDescriptor.TYPE_STRING),
        ("ContainerConfig", "stop_signal", 18, FieldDescriptor.TYPE_ENUM),
        ("ExecSyncRequest", "timeout", 3, FieldDescriptor.TYPE_INT64),
        ("StopContainerRequest", "timeout", 2, FieldDescriptor.TYPE_INT64),
        ("ImageSpec", "user_specified_image", 18, FieldDescriptor.TYPE_STRING),
        ("ImageSpec", "image_ref", 20, FieldDescriptor.TYPE_STRING),
        ("LinuxSandboxSecurityContext", "run_as_group", 8, FieldDescriptor.TYPE_MESSAGE),
        (
            "LinuxContainerSecurityContext",
            "supplemental_groups_policy",
            17,
            FieldDescriptor.TYPE_ENUM,
        ),
        ("ContainerStatus", "user", 18, FieldDescriptor.TYPE_MESSAGE),
        ("Mount", "uidMappings", 6, FieldDescriptor.TYPE_MESSAGE),
        ("KeyValue", "value", 2, FieldDescriptor.TYPE_BYTES),
    ],
)
def test_wire_numbers(message: str, field: str, number: int, type_: int) -> None:
    fd = api_pb2.DESCRIPTOR.message_types_by_name[message].fields_by_name[field]
    assert fd.number == number
    assert fd.type == type_


def test_enum_values() -> None:
    assert api_pb2.SANDBOX_READY == 0
    assert api_pb2.CONTAINER_EXITED == 2
    assert api_pb2.SIGNAL_SIGTERM == 23
    assert api_pb2.SIGNAL_SIGRTMAX == 65
    assert api_pb2.SecurityProfile.Localhost == 2
    assert api_pb2.CGROUPFS == 1


def test_labels_round_trip() -> None:
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="p", uid="u", namespace="n", attempt=1),
        labels={"a": "b"},
    )
    back = api_pb2.PodSandboxConfig.FromString(cfg.SerializeToString())
    assert back.metadata.uid == "u"
    assert dict(back.labels) == {"a": "b"}
