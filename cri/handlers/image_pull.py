"""PullImage."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from api import api_pb2 as pb
from base.text import check_text, shorten
from cri.call import call_context, require
from cri.convert.container import MAX_IMAGE_LEN
from oci.image.registry_auth import Credentials

if TYPE_CHECKING:
    from cri.services import Services


def credentials(auth: pb.AuthConfig) -> Credentials | None:
    """The registry credentials of a request, or None for anonymous pulls."""
    if not (auth.username or auth.password or auth.auth or auth.identity_token
            or auth.registry_token):
        return None
    return Credentials(
        username=auth.username,
        password=auth.password,
        auth=auth.auth,
        identity_token=auth.identity_token,
        registry_token=auth.registry_token,
    ).validate()


def pull_image(
    d: Services, req: pb.PullImageRequest, ctx: grpc.ServicerContext
) -> pb.PullImageResponse:
    """Pull an image (tag or digest) and return its image ID."""
    image = require(
        req.image.image, "PullImageRequest.image.image",
        "an image reference such as docker.io/library/busybox:latest",
    )
    check_text(image, "PullImageRequest.image.image", MAX_IMAGE_LEN)
    creds = credentials(req.auth) if req.HasField("auth") else None
    server = req.auth.server_address if req.HasField("auth") else ""
    check_text(server, "AuthConfig.server_address", MAX_IMAGE_LEN)
    what = f"pull of {shorten(image)}"
    record = d.images.pull(image, creds, call_context(ctx, what), server)
    return pb.PullImageResponse(image_ref=record.id)
