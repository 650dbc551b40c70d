"""The rpc tables: which handler serves each rpc of the two CRI services.

They are the whole API surface peapod implements; every other rpc of the proto
answers UNIMPLEMENTED (see ``cri.servicers``).
"""

from __future__ import annotations

from cri.handlers import (
    container_create,
    container_events,
    container_exec,
    container_status,
    container_stop,
    container_update,
    image_pull,
    image_remove,
    image_status,
    pod_metrics,
    runtime_info,
    sandbox_remove,
    sandbox_run,
    sandbox_status,
    sandbox_stop,
    stats,
    streaming,
)

RUNTIME_HANDLERS = {
    "Version": runtime_info.version,
    "Status": runtime_info.status,
    "RuntimeConfig": runtime_info.runtime_config,
    "UpdateRuntimeConfig": runtime_info.update_runtime_config,
    "RunPodSandbox": sandbox_run.run_pod_sandbox,
    "StopPodSandbox": sandbox_stop.stop_pod_sandbox,
    "RemovePodSandbox": sandbox_remove.remove_pod_sandbox,
    "PodSandboxStatus": sandbox_status.pod_sandbox_status,
    "ListPodSandbox": sandbox_status.list_pod_sandbox,
    "StreamPodSandboxes": sandbox_status.stream_pod_sandboxes,
    "CreateContainer": container_create.create_container,
    "StartContainer": container_create.start_container,
    "StopContainer": container_stop.stop_container,
    "RemoveContainer": container_stop.remove_container,
    "ContainerStatus": container_status.container_status,
    "ListContainers": container_status.list_containers,
    "StreamContainers": container_status.stream_containers,
    "GetContainerEvents": container_events.get_container_events,
    "ExecSync": container_exec.exec_sync,
    "Exec": streaming.exec_,
    "Attach": streaming.attach,
    "PortForward": streaming.port_forward,
    "UpdateContainerResources": container_update.update_container_resources,
    "ReopenContainerLog": container_update.reopen_container_log,
    "ListMetricDescriptors": pod_metrics.list_metric_descriptors,
    "ListPodSandboxMetrics": pod_metrics.list_pod_sandbox_metrics,
    "StreamPodSandboxMetrics": pod_metrics.stream_pod_sandbox_metrics,
    "ContainerStats": stats.container_stats,
    "ListContainerStats": stats.list_container_stats,
    "StreamContainerStats": stats.stream_container_stats,
    "PodSandboxStats": stats.pod_sandbox_stats,
    "ListPodSandboxStats": stats.list_pod_sandbox_stats,
    "StreamPodSandboxStats": stats.stream_pod_sandbox_stats,
}

IMAGE_HANDLERS = {
    "PullImage": image_pull.pull_image,
    "ImageStatus": image_status.image_status,
    "ListImages": image_status.list_images,
    "StreamImages": image_status.stream_images,
    "ImageFsInfo": image_status.image_fs_info,
    "RemoveImage": image_remove.remove_image,
}
