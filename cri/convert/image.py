"""Image records to CRI messages."""

from __future__ import annotations

import json
from typing import Any

from api import api_pb2 as pb
from oci.image.store import ImageRecord


def image_user(config: dict[str, Any]) -> tuple[int | None, str]:
    """The (uid, username) the image runs as, from its config's User."""
    user = str((config.get("config") or {}).get("User") or "")
    name = user.split(":", 1)[0]
    if not name:
        return None, ""
    if name.isdigit():
        return int(name), ""
    return None, name


def to_pb_image(rec: ImageRecord) -> pb.Image:
    uid, username = image_user(rec.config)
    image = pb.Image(
        id=rec.id,
        repo_tags=rec.repo_tags,
        repo_digests=rec.repo_digests,
        size=rec.size,
        username=username,
        spec=pb.ImageSpec(image=rec.id),
        pinned=rec.pinned,
    )
    if uid is not None:
        image.uid.value = uid
    return image


def verbose_info(rec: ImageRecord) -> dict[str, str]:
    """The verbose map of ImageStatus: the image config and where it came from."""
    return {
        "info": json.dumps(
            {
                "id": rec.id,
                "manifestDigest": rec.manifest_digest,
                "manifestMediaType": rec.manifest_media_type,
                "layers": list(rec.layers),
                "imageSpec": rec.config,
            }
        )
    }
