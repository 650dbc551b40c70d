"""Lifecycle events (``oci.container.events``) to GetContainerEvents replies."""

from __future__ import annotations

from api import api_pb2 as pb
from cri.convert import container, sandbox
from oci.container.events import (
    CONTAINER_CREATED,
    CONTAINER_DELETED,
    CONTAINER_STARTED,
    CONTAINER_STOPPED,
    LifecycleEvent,
)

_KINDS = {
    CONTAINER_CREATED: pb.CONTAINER_CREATED_EVENT,
    CONTAINER_STARTED: pb.CONTAINER_STARTED_EVENT,
    CONTAINER_STOPPED: pb.CONTAINER_STOPPED_EVENT,
    CONTAINER_DELETED: pb.CONTAINER_DELETED_EVENT,
}


def to_pb_event(event: LifecycleEvent) -> pb.ContainerEventResponse:
    """The reply for ``event``: its pod's status and its pod's container statuses."""
    return pb.ContainerEventResponse(
        container_id=event.container_id,
        container_event_type=_KINDS[event.kind],
        created_at=event.created_at,
        pod_sandbox_status=sandbox.to_pb_status(event.pod),
        containers_statuses=[container.to_pb_status(r) for r in event.containers],
    )
