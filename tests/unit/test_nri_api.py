"""The committed NRI and ttrpc stubs carry containerd/nri v0.12's and ttrpc's wire facts."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from api import nri_pb2, ttrpc_pb2

PLUGIN_METHODS = [
    "Configure", "Synchronize", "Shutdown", "RunPodSandbox", "UpdatePodSandbox",
    "PostUpdatePodSandbox", "StopPodSandbox", "RemovePodSandbox", "CreateContainer",
    "PostCreateContainer", "StartContainer", "PostStartContainer", "UpdateContainer",
    "PostUpdateContainer", "StopContainer", "RemoveContainer", "StateChange",
    "ValidateContainerAdjustment",
]


def test_packages_and_services() -> None:
    assert nri_pb2.DESCRIPTOR.package == "nri.pkg.api.v1alpha1"
    assert ttrpc_pb2.DESCRIPTOR.package == "ttrpc"
    plugin = nri_pb2.DESCRIPTOR.services_by_name["Plugin"]
    runtime = nri_pb2.DESCRIPTOR.services_by_name["Runtime"]
    assert plugin.full_name == "nri.pkg.api.v1alpha1.Plugin"
    assert [m.name for m in plugin.methods] == PLUGIN_METHODS
    assert [m.name for m in runtime.methods] == ["RegisterPlugin", "UpdateContainers"]


@pytest.mark.parametrize(("proto", "message", "field", "number", "type_"), [
    (ttrpc_pb2, "Request", "timeout_nano", 4, FieldDescriptor.TYPE_INT64),
    (ttrpc_pb2, "Response", "status", 1, FieldDescriptor.TYPE_MESSAGE),
    (ttrpc_pb2, "Status", "message", 2, FieldDescriptor.TYPE_STRING),
    (nri_pb2, "ConfigureResponse", "events", 2, FieldDescriptor.TYPE_INT32),
    (nri_pb2, "ContainerAdjustment", "annotations", 2, FieldDescriptor.TYPE_MESSAGE),
    (nri_pb2, "ContainerAdjustment", "args", 9, FieldDescriptor.TYPE_STRING),
    (nri_pb2, "Container", "image", 22, FieldDescriptor.TYPE_MESSAGE),
    (nri_pb2, "LinuxContainerAdjustment", "memory_policy", 12, FieldDescriptor.TYPE_MESSAGE),
    (nri_pb2, "LinuxCPU", "cpus", 6, FieldDescriptor.TYPE_STRING),
    (nri_pb2, "LinuxMemory", "swappiness", 6, FieldDescriptor.TYPE_MESSAGE),
    (nri_pb2, "PodSandbox", "ips", 10, FieldDescriptor.TYPE_STRING),
    (nri_pb2, "RegisterPluginRequest", "plugin_idx", 2, FieldDescriptor.TYPE_STRING),
])
def test_wire_numbers(proto, message: str, field: str, number: int, type_: int) -> None:
    fd = proto.DESCRIPTOR.message_types_by_name[message].fields_by_name[field]
    assert (fd.number, fd.type) == (number, type_)


def test_enums() -> None:
    assert nri_pb2.Event.Value("REMOVE_CONTAINER") == 11
    assert nri_pb2.Event.Value("LAST") == 15
    assert nri_pb2.ContainerState.Value("CONTAINER_STOPPED") == 4
    assert nri_pb2.Field.Value("CPUSetCPUs") == 21
