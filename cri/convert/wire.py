"""Replies handed to gRPC already in protobuf's wire format.

At 100 pods, ListContainers spent most of its time in protobuf: building the reply
(which copies every item into it) and serializing it again on every call. A cached
item can instead be kept encoded, and a reply put together by joining bytes: the wire
format of a message is the concatenation of its fields, and a repeated field is its
elements one after another. ``cri.servicers`` sends an ``Encoded`` as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_LENGTH_DELIMITED = 2


class Encoded:
    """A reply of protobuf type ``type`` whose wire bytes are ``data``."""

    __slots__ = ("data", "type")

    def __init__(self, message_type: type, data: bytes) -> None:
        self.type = message_type
        self.data = data

    def decode(self) -> Any:
        """The reply as a message (for tests and logs; the server sends ``data``)."""
        return self.type.FromString(self.data)


def varint(value: int) -> bytes:
    """``value`` (not negative) as a protobuf varint."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a message, string or bytes): tag, length, payload."""
    return varint(number << 3 | _LENGTH_DELIMITED) + varint(len(payload)) + payload


def serializer(message_type: Any) -> Callable[[Any], bytes]:
    """gRPC's response serializer for ``message_type``, passing an ``Encoded`` through."""
    plain = message_type.SerializeToString

    def serialize(reply: Any) -> bytes:
        if reply.__class__ is Encoded:
            if reply.type is not message_type:
                raise TypeError(
                    f"an encoded {reply.type.__name__} given as a {message_type.__name__}"
                )
            return reply.data  # type: ignore[no-any-return]
        return plain(reply)  # type: ignore[no-any-return]

    return serialize
