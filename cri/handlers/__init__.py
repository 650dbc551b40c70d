"""Per-rpc handlers. Each takes (daemon, request, grpc context) and returns a response.

The tables below are the whole API surface peapod implements; every other rpc
of the proto answers UNIMPLEMENTED.
"""

from __future__ import annotations

from cri.handlers import image_pull, image_remove, image_status, runtime_info

RUNTIME_HANDLERS = {
    "Version": runtime_info.version,
    "Status": runtime_info.status,
    "RuntimeConfig": runtime_info.runtime_config,
    "UpdateRuntimeConfig": runtime_info.update_runtime_config,
}

IMAGE_HANDLERS = {
    "PullImage": image_pull.pull_image,
    "ImageStatus": image_status.image_status,
    "ListImages": image_status.list_images,
    "ImageFsInfo": image_status.image_fs_info,
    "RemoveImage": image_remove.remove_image,
}
