"""The servicers: every rpc without a handler answers UNIMPLEMENTED, saying which."""

from __future__ import annotations

import pytest

from api import api_pb2 as pb
from base.errors import Unimplemented
from cri import routes, servicers


def test_unary_and_streaming_rpcs_without_a_handler_are_unimplemented() -> None:
    runtime = servicers.build("RuntimeService", {}, None)
    with pytest.raises(Unimplemented, match=r"RuntimeService\.Version is not implemented"):
        runtime.Version(pb.VersionRequest(), None)
    stream = runtime.GetContainerEvents(pb.GetEventsRequest(), None)
    with pytest.raises(Unimplemented, match=r"RuntimeService\.GetContainerEvents is not impl"):
        next(stream)  # a streaming stub fails when the stream is read


def test_a_handler_for_an_rpc_the_service_lacks_is_refused() -> None:
    with pytest.raises(ValueError, match="NoSuchRpc"):
        servicers.build("ImageService", {"NoSuchRpc": lambda d, r, c: None}, None)


def test_the_route_tables_name_real_rpcs() -> None:
    servicers.build("RuntimeService", routes.RUNTIME_HANDLERS, None)
    servicers.build("ImageService", routes.IMAGE_HANDLERS, None)
