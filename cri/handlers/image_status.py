"""ImageStatus, ListImages, StreamImages and ImageFsInfo: read-only image queries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from cri.call import require
from cri.convert.batches import batches
from cri.convert.image import to_pb_image, verbose_info

if TYPE_CHECKING:
    from cri.services import Services


def image_status(
    d: Services, req: pb.ImageStatusRequest, ctx: grpc.ServicerContext
) -> pb.ImageStatusResponse:
    """Status of one image; an absent image gives an empty response, not an error."""
    ref = require(req.image.image, "ImageStatusRequest.image.image", "an image reference or ID")
    record = d.images.status(ref)
    if record is None:
        return pb.ImageStatusResponse()
    info = verbose_info(record) if req.verbose else {}
    return pb.ImageStatusResponse(image=to_pb_image(record), info=info)


def list_images(
    d: Services, req: pb.ListImagesRequest, ctx: grpc.ServicerContext
) -> pb.ListImagesResponse:
    """Every image, or the one the filter names."""
    return pb.ListImagesResponse(images=_images(d, req))


def stream_images(
    d: Services, req: pb.StreamImagesRequest, ctx: grpc.ServicerContext
) -> Iterator[pb.StreamImagesResponse]:
    """ListImages' answer in batches (none for an empty list)."""
    for batch in batches(_images(d, req)):
        yield pb.StreamImagesResponse(images=batch)


def _images(d: Services, req: pb.ListImagesRequest | pb.StreamImagesRequest) -> list[pb.Image]:
    wanted = req.filter.image.image if req.HasField("filter") else ""
    if wanted:
        record = d.images.status(wanted)
        records = [record] if record is not None else []
    else:
        records = d.images.list()
    return [to_pb_image(r) for r in records]


def image_fs_info(
    d: Services, req: pb.ImageFsInfoRequest, ctx: grpc.ServicerContext
) -> pb.ImageFsInfoResponse:
    """Bytes and inodes used by the image store."""
    usage = d.images.fs_usage()
    fs = pb.FilesystemUsage(
        timestamp=time.time_ns(),
        fs_id=pb.FilesystemIdentifier(mountpoint=str(usage.path)),
    )
    fs.used_bytes.value = usage.used_bytes
    fs.inodes_used.value = usage.inodes_used
    return pb.ImageFsInfoResponse(image_filesystems=[fs], container_filesystems=[fs])
