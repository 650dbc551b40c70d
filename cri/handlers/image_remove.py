"""RemoveImage."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from cri.call import require

if TYPE_CHECKING:
    from cri.services import Services


def remove_image(
    d: Services, req: pb.RemoveImageRequest, ctx: grpc.ServicerContext
) -> pb.RemoveImageResponse:
    """Remove an image and all its tags; removing an absent image succeeds."""
    ref = require(req.image.image, "RemoveImageRequest.image.image", "an image reference or ID")
    d.images.remove(ref)
    return pb.RemoveImageResponse()
