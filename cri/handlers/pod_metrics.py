"""ListMetricDescriptors, ListPodSandboxMetrics and StreamPodSandboxMetrics.

The requests carry no fields; the configured families (``stats.included_pod_metrics``)
decide what is described and sent. The stream sends the same pods as the list, a few
per message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from cri.convert import pod_metrics as convert
from cri.convert.batches import batches

if TYPE_CHECKING:
    from cri.services import Services

# Pods per stream message: a pod with a few containers is some 10-30 KB of metrics.
STREAM_BATCH = 50


def list_metric_descriptors(
    d: Services, req: pb.ListMetricDescriptorsRequest, ctx: grpc.ServicerContext
) -> pb.ListMetricDescriptorsResponse:
    """Name, help and label keys of every metric ListPodSandboxMetrics may send."""
    return pb.ListMetricDescriptorsResponse(
        descriptors=[convert.to_pb_descriptor(s) for s in d.pod_metrics.descriptors]
    )


def list_pod_sandbox_metrics(
    d: Services, req: pb.ListPodSandboxMetricsRequest, ctx: grpc.ServicerContext
) -> pb.ListPodSandboxMetricsResponse:
    """Metrics of every ready pod and its created and running containers, read now."""
    return pb.ListPodSandboxMetricsResponse(
        pod_metrics=[convert.to_pb_pod_metrics(p) for p in d.pod_metrics.list()]
    )


def stream_pod_sandbox_metrics(
    d: Services, req: pb.StreamPodSandboxMetricsRequest, ctx: grpc.ServicerContext
) -> Iterator[pb.StreamPodSandboxMetricsResponse]:
    """What ListPodSandboxMetrics answers, ``STREAM_BATCH`` pods per message (none for
    no pods)."""
    for batch in batches(d.pod_metrics.list(), STREAM_BATCH):
        yield pb.StreamPodSandboxMetricsResponse(
            pod_sandbox_metrics=[convert.to_pb_pod_metrics(p) for p in batch]
        )
