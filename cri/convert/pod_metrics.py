"""CRI metrics: the domain's metric catalog and samples as MetricDescriptor and Metric."""

from __future__ import annotations

from api import api_pb2 as pb
from oci.stats.metric_catalog import COUNTER, MetricSpec
from oci.stats.pod_metrics import MetricSample, PodMetricSet


def to_pb_descriptor(spec: MetricSpec) -> pb.MetricDescriptor:
    return pb.MetricDescriptor(name=spec.name, help=spec.help, label_keys=spec.label_keys)


def to_pb_metric(sample: MetricSample) -> pb.Metric:
    # the wrapper as a dict: a third cheaper than a UInt64Value object (upb), per sample
    return pb.Metric(
        name=sample.name,
        timestamp=sample.timestamp,
        metric_type=pb.COUNTER if sample.kind == COUNTER else pb.GAUGE,
        label_values=sample.labels,
        value={"value": sample.value},
    )


def to_pb_pod_metrics(pod: PodMetricSet) -> pb.PodSandboxMetrics:
    return pb.PodSandboxMetrics(
        pod_sandbox_id=pod.pod_id,
        metrics=[to_pb_metric(s) for s in pod.samples],
        container_metrics=[
            pb.ContainerMetrics(
                container_id=c.container_id, metrics=[to_pb_metric(s) for s in c.samples]
            )
            for c in pod.containers
        ],
    )
